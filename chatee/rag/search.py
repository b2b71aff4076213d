"""Knowledge-base retrieval as the API and the AG_RAG step use it: embed the query with the
configured embeddings model, then run the hybrid index."""

from __future__ import annotations

import openai
from sqlalchemy.ext.asyncio import AsyncSession

from chatee.config import Settings
from chatee.llm import ClientPool, LLMNotConfigured
from chatee.logging import get_logger
from chatee.rag.embed import EmbeddingRejected, embed_texts
from chatee.rag.index import Hit, HybridIndex, MatrixVectorIndex, SearchParams

log = get_logger(__name__)


class Retriever:
    def __init__(self, settings: Settings, clients: ClientPool) -> None:
        self.settings = settings
        self.clients = clients
        rag = settings.rag
        self.index = HybridIndex(MatrixVectorIndex(max_bytes=rag.vector_cache_mb * 1024 * 1024))

    def params(self, top_k: int | None = None, threshold: float | None = None) -> SearchParams:
        rag = self.settings.rag
        return SearchParams(
            top_k=top_k or rag.top_k,
            candidates=max(rag.candidates, top_k or 0),
            rrf_k=rag.rrf_k,
            score_threshold=rag.score_threshold if threshold is None else threshold,
            min_similarity=rag.min_similarity,
        )

    async def search(
        self,
        db: AsyncSession,
        kb_ids: list[int],
        query: str,
        top_k: int | None = None,
        threshold: float | None = None,
        lexical_fallback: bool = False,
    ) -> list[Hit]:
        """Hybrid search; lexical only when no embeddings provider is configured, or (with
        `lexical_fallback`) when the provider fails — a chat turn should not wait on it."""
        if not kb_ids or not query.strip():
            return []
        rag = self.settings.rag
        vector = None
        try:
            client = self.clients.get(rag.embedding_provider)
            vectors = await embed_texts(
                client, rag.embedding_model, [query], 1, rag.embedding_dimensions
            )
            vector = vectors[0]
        except LLMNotConfigured:
            log.warning("no embeddings provider configured; lexical search only")
        except (openai.APIError, EmbeddingRejected) as exc:
            if not lexical_fallback:
                raise
            log.warning("embeddings failed; lexical search only", error=type(exc).__name__)
        return await self.index.search(db, kb_ids, query, vector, self.params(top_k, threshold))
