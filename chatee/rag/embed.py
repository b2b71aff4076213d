"""Embeddings through any OpenAI-compatible endpoint (the official `openai` SDK), in batches.

No retries here: the client is built with `max_retries=0` and Temporal's activity retry policy
is the one place that retries. A request the provider rejects outright (bad model, bad key)
raises EmbeddingRejected, which ingestion treats as permanent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import openai
from openai import AsyncOpenAI

from chatee.llm import PERMANENT_STATUS, rejection_message

DTYPE = np.dtype("<f4")  # stored as little-endian float32 bytes


class EmbeddingRejected(Exception):
    """The provider refused the request; retrying the same request will not help."""


async def embed_texts(
    client: AsyncOpenAI,
    model: str,
    texts: Sequence[str],
    batch_size: int = 64,
    dimensions: int | None = None,
) -> np.ndarray:
    """One L2-normalised float32 row per text, in order."""
    rows: list[np.ndarray] = []
    for at in range(0, len(texts), batch_size):
        batch = [t if t.strip() else "." for t in texts[at : at + batch_size]]
        extra = {"dimensions": dimensions} if dimensions else {}
        try:
            response = await client.embeddings.create(model=model, input=batch, **extra)
        except openai.APIStatusError as exc:
            if exc.status_code in PERMANENT_STATUS:
                raise EmbeddingRejected(
                    f"the embeddings provider rejected the request ({exc.status_code}): "
                    f"{rejection_message(exc)}"
                ) from None
            raise
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise RuntimeError(f"asked for {len(batch)} embeddings, got {len(data)}")
        rows.append(np.asarray([item.embedding for item in data], dtype=np.float32))
    if not rows:
        return np.zeros((0, dimensions or 0), dtype=np.float32)
    return normalise(np.concatenate(rows))


def normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=DTYPE).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=DTYPE)
