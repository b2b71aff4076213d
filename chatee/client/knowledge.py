"""Knowledge bases: documents uploaded into them and ingested in the background, a search that
shows what an AG_RAG step would find, and which agents search which knowledge base."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chatee.client.base import BaseClient
from chatee.client.models import AgentKnowledgeBases, Document, KnowledgeBase, SearchHit

KB = "/knowledge-bases"


class KnowledgeApi(BaseClient):
    async def create_knowledge_base(self, name: str, description: str = "") -> KnowledgeBase:
        body = {"name": name, "description": description}
        return await self._model(KnowledgeBase, "POST", KB, json=body)

    async def knowledge_bases(self) -> list[KnowledgeBase]:
        return await self._models(KnowledgeBase, "GET", KB)

    async def knowledge_base(self, kb_id: str) -> KnowledgeBase:
        return await self._model(KnowledgeBase, "GET", f"{KB}/{kb_id}")

    async def delete_knowledge_base(self, kb_id: str) -> None:
        """With every document and chunk of it; agents that searched it no longer do."""
        await self.request("DELETE", f"{KB}/{kb_id}")

    async def search_knowledge(
        self,
        kb_id: str,
        query: str,
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """What an AG_RAG step would find, best first (the server's defaults when None)."""
        body: dict[str, Any] = {"query": query}
        if top_k is not None:
            body["top_k"] = top_k
        if score_threshold is not None:
            body["score_threshold"] = score_threshold
        return await self._models(SearchHit, "POST", f"{KB}/{kb_id}/search", json=body)

    # -- documents -------------------------------------------------------------------------

    async def upload_document(
        self, kb_id: str, filename: str, content: bytes, content_type: str | None = None
    ) -> Document:
        """Text, Markdown, HTML or PDF (told apart by `content_type`, else by the name). It
        answers at once, `pending`: `wait_for_document` until it is searchable."""
        files = {"file": (filename, content, content_type)}
        return await self._model(Document, "POST", f"{KB}/{kb_id}/documents", files=files)

    async def documents(self, kb_id: str) -> list[Document]:
        return await self._models(Document, "GET", f"{KB}/{kb_id}/documents")

    async def document(self, kb_id: str, doc_id: str) -> Document:
        """With its ingestion `status` and `progress`."""
        return await self._model(Document, "GET", f"{KB}/{kb_id}/documents/{doc_id}")

    async def replace_document(
        self,
        kb_id: str,
        doc_id: str,
        filename: str,
        content: bytes,
        content_type: str | None = None,
    ) -> Document:
        """A new `version`: it replaces the old chunks once ingested (until then the document
        is not searchable). The same bytes again change nothing."""
        files = {"file": (filename, content, content_type)}
        path = f"{KB}/{kb_id}/documents/{doc_id}"
        return await self._model(Document, "PUT", path, files=files)

    async def retry_document(self, kb_id: str, doc_id: str) -> Document:
        """Ingest a `failed` document again (any other is `Conflict`)."""
        path = f"{KB}/{kb_id}/documents/{doc_id}/retry"
        return await self._model(Document, "POST", path)

    async def delete_document(self, kb_id: str, doc_id: str) -> None:
        await self.request("DELETE", f"{KB}/{kb_id}/documents/{doc_id}")

    async def wait_for_document(
        self,
        kb_id: str,
        doc_id: str,
        timeout: float = 120,  # noqa: ASYNC109 (a polling deadline, in the name callers know)
        interval: float = 0.25,
    ) -> Document:
        """Poll until ingestion is over: the document, `ready` or `failed` (with `error`).
        `TimeoutError` if it is still going after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            doc = await self.document(kb_id, doc_id)
            if doc.settled:
                return doc
            if time.monotonic() >= deadline:
                progress = f"{doc.progress.chunks_embedded}/{doc.progress.chunks_total}"
                raise TimeoutError(f"document {doc_id} still {doc.status} ({progress} chunks)")
            await asyncio.sleep(interval)

    # -- agents ----------------------------------------------------------------------------

    async def agent_knowledge_bases(self, agent_id: str) -> AgentKnowledgeBases:
        path = f"/agents/{agent_id}/knowledge-bases"
        return await self._model(AgentKnowledgeBases, "GET", path)

    async def set_agent_knowledge_bases(
        self, agent_id: str, kb_ids: list[str]
    ) -> AgentKnowledgeBases:
        """Replace the set the agent's AG_RAG steps search (each must be yours)."""
        path = f"/agents/{agent_id}/knowledge-bases"
        body = {"knowledge_base_ids": kb_ids}
        return await self._model(AgentKnowledgeBases, "PUT", path, json=body)
