"""Ingestion activities on `chatee-rag`: `PrepareDocument` (parse + chunk), `EmbedChunks` (one
batch) and `FinishDocument`. Permanent problems leave as non-retryable ApplicationErrors whose
message is what the user sees as the document's `error`."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.steps import heartbeating
from chatee.llm import LLMNotConfigured
from chatee.rag import documents
from chatee.rag.embed import EmbeddingRejected
from chatee.rag.parse import UnreadableDocument
from workflows.ingest import DocumentStep


def _permanent(exc: Exception, kind: str) -> ApplicationError:
    return ApplicationError(str(exc), type=kind, non_retryable=True)


class IngestActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="PrepareDocument")
    async def prepare(self, step: DocumentStep) -> int:
        try:
            return await documents.prepare(
                self.deps.db, int(step.document_id), step.version, self.deps.settings.rag
            )
        except UnreadableDocument as exc:
            raise _permanent(exc, "UnreadableDocument") from None
        except documents.Superseded as exc:
            raise _permanent(exc, "Superseded") from None

    @activity.defn(name="EmbedChunks")
    async def embed(self, step: DocumentStep) -> int:
        rag = self.deps.settings.rag
        try:
            client = self.deps.llm.get(rag.embedding_provider)
            async with heartbeating():
                return await documents.embed_batch(
                    self.deps.db, client, rag, int(step.document_id), step.version, step.start,
                    step.end,
                )  # fmt: skip
        except LLMNotConfigured as exc:
            raise _permanent(exc, "LLMNotConfigured") from None
        except EmbeddingRejected as exc:
            raise _permanent(exc, "EmbeddingRejected") from None
        except documents.Superseded as exc:
            raise _permanent(exc, "Superseded") from None

    @activity.defn(name="FinishDocument")
    async def finish(self, step: DocumentStep) -> None:
        try:
            await documents.finish(
                self.deps.db, int(step.document_id), step.version, step.status, step.error
            )
        except documents.Superseded as exc:
            raise _permanent(exc, "Superseded") from None
