"""Ingestion activities on `chatee-rag`: `PrepareDocument` (parse + chunk), `EmbedChunks` (one
batch) and `FinishDocument`. Permanent problems leave as non-retryable ApplicationErrors whose
message is what the user sees as the document's `error`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.steps import heartbeating
from chatee.llm import LLMNotConfigured
from chatee.rag import documents
from chatee.rag.embed import EmbeddingRejected
from chatee.rag.parse import UnreadableDocument
from workflows.ingest import DocumentStep

# failures no retry can fix: the attempt ends at once, and the message is the document's error
PERMANENT = (UnreadableDocument, LLMNotConfigured, EmbeddingRejected, documents.Superseded)


@contextlib.contextmanager
def _permanent_failures() -> Iterator[None]:
    try:
        yield
    except PERMANENT as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


class IngestActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="PrepareDocument")
    async def prepare(self, step: DocumentStep) -> int:
        with _permanent_failures():
            return await documents.prepare(
                self.deps.db, int(step.document_id), step.version, self.deps.settings.rag
            )

    @activity.defn(name="EmbedChunks")
    async def embed(self, step: DocumentStep) -> int:
        rag = self.deps.settings.rag
        with _permanent_failures():
            client = self.deps.llm.get(rag.embedding_provider)
            async with heartbeating():
                return await documents.embed_batch(
                    self.deps.db, client, rag, int(step.document_id), step.version, step.start,
                    step.end,
                )  # fmt: skip

    @activity.defn(name="FinishDocument")
    async def finish(self, step: DocumentStep) -> None:
        with _permanent_failures():
            await documents.finish(
                self.deps.db, int(step.document_id), step.version, step.status, step.error
            )
