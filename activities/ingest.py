"""Ingestion activities on `chatee-rag`: `PrepareDocument` (parse + chunk), `EmbedChunks` (one
batch) and `FinishDocument`. Permanent problems leave as non-retryable ApplicationErrors whose
message is what the user sees as the document's `error`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import heartbeating
from chatee.llm import LLMNotConfigured
from chatee.rag import documents
from chatee.rag.embed import EmbeddingRejected
from chatee.rag.parse import UnreadableDocument
from chatee.services import Services
from workflows import names
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
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.PREPARE_DOCUMENT)
    async def prepare(self, step: DocumentStep) -> int:
        with _permanent_failures():
            return await documents.prepare(
                self.services.sessionmaker,
                int(step.document_id),
                step.version,
                self.services.settings.rag,
            )

    @activity.defn(name=names.EMBED_CHUNKS)
    async def embed(self, step: DocumentStep) -> int:
        rag = self.services.settings.rag
        with _permanent_failures():
            client = self.services.llm.get(rag.embedding_provider)
            async with heartbeating():
                return await documents.embed_batch(
                    self.services.sessionmaker, client, rag, int(step.document_id), step.version,
                    step.start,
                    step.end,
                )  # fmt: skip

    @activity.defn(name=names.FINISH_DOCUMENT)
    async def finish(self, step: DocumentStep) -> None:
        with _permanent_failures():
            await documents.finish(
                self.services.sessionmaker,
                int(step.document_id),
                step.version,
                step.status,
                step.error,
            )
