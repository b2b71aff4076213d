"""`IngestDocument` (id `ingest-<document id>`, queue `chatee-rag`): parse → chunk → embed →
index one uploaded document, with its progress visible through the API as it goes.

The upload stays in the database; history carries ids, versions and counts only. Embedding
runs in batches, each one retried activity that embeds only what is still missing. A
re-upload starts a new run with the same id, which terminates the old one; every activity
checks the document's version, so a superseded run stops without touching the new upload.
When a step keeps failing, the document is marked `failed` with the error; `POST .../retry`
runs the workflow again, and since preparing replaces the document's chunks, nothing doubles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import names

PERMANENT = ["UnreadableDocument", "EmbeddingRejected", "Superseded", "LLMNotConfigured"]


@dataclass
class IngestInput:
    document_id: str
    version: int
    batch_size: int = 64  # chunks per EmbedChunks activity
    max_attempts: int = 3  # per activity, before the document fails


@dataclass
class DocumentStep:
    document_id: str
    version: int
    start: int = 0  # EmbedChunks: chunk ordinals [start, end)
    end: int = 0
    status: str = ""  # FinishDocument: ready | failed
    error: str | None = None


@dataclass
class IngestResult:
    status: str  # ready | failed | superseded
    chunks: int = 0
    error: str | None = None


@workflow.defn(name=names.INGEST_WORKFLOW)
class IngestDocument:
    @workflow.run
    async def run(self, inp: IngestInput) -> IngestResult:
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            maximum_interval=timedelta(seconds=20),
            maximum_attempts=inp.max_attempts,
            non_retryable_error_types=PERMANENT,
        )
        step = DocumentStep(inp.document_id, inp.version)
        doc = f"document {inp.document_id} v{inp.version}"
        chunks = 0
        try:
            chunks = await workflow.execute_activity(
                names.PREPARE_DOCUMENT,
                step,
                result_type=int,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=retry,
                summary=f"{doc}: parse and chunk",
            )
            for start in range(0, chunks, inp.batch_size):
                end = min(start + inp.batch_size, chunks)
                await workflow.execute_activity(
                    names.EMBED_CHUNKS,
                    DocumentStep(inp.document_id, inp.version, start, end),
                    result_type=int,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=retry,
                    summary=f"{doc}: embed chunks {start}–{end - 1} of {chunks}",
                )
        except ActivityError as err:
            kind, message = _describe(err)
            if kind == "Superseded":
                return IngestResult("superseded", chunks)
            await self._finish(step, "failed", message, retry)
            return IngestResult("failed", chunks, message)
        await self._finish(step, "ready", None, retry)
        return IngestResult("ready", chunks)

    async def _finish(
        self, step: DocumentStep, status: str, error: str | None, retry: RetryPolicy
    ) -> None:
        try:
            await workflow.execute_activity(
                names.FINISH_DOCUMENT,
                DocumentStep(step.document_id, step.version, status=status, error=error),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(
                    maximum_interval=timedelta(seconds=20), non_retryable_error_types=["Superseded"]
                ),
                summary=f"document {step.document_id} v{step.version}: {status}",
            )
        except ActivityError as err:
            if _describe(err)[0] != "Superseded":
                raise


def _describe(err: ActivityError) -> tuple[str, str]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "error", cause.message
    if cause is not None:
        return type(cause).__name__, str(cause) or type(cause).__name__
    return "error", str(err)
