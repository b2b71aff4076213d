"""The reads and writes of ingestion and document management. Every ingestion step checks the
document's `version` first, so a step of a superseded upload never touches the new one."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
from openai import AsyncOpenAI
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.config import Rag
from chatee.ids import new_id
from chatee.models import AgentKnowledgeBase, KbChunk, KbDocument, KnowledgeBase
from chatee.rag.chunk import chunk_text
from chatee.rag.embed import embed_texts, to_bytes
from chatee.rag.parse import UnreadableDocument, parse

Factory = async_sessionmaker[AsyncSession]
READY, FAILED, PENDING, PROCESSING = "ready", "failed", "pending", "processing"
MAX_ERROR = 1000


class Superseded(Exception):
    """The document was re-uploaded or deleted after this ingestion started."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _current(db: AsyncSession, document_id: int, version: int) -> KbDocument:
    doc = await db.get(KbDocument, document_id, with_for_update=_locks(db))
    if doc is None or doc.version != version:
        raise Superseded(f"document {document_id} v{version} is no longer current")
    return doc


def _locks(db: AsyncSession) -> bool:
    return db.get_bind().dialect.name != "sqlite"


async def bump(db: AsyncSession, kb_id: int) -> None:
    """The knowledge base's searchable chunks changed: cached vector matrices reload."""
    await db.execute(
        update(KnowledgeBase)
        .where(KnowledgeBase.id == kb_id)
        .values(version=KnowledgeBase.version + 1)
    )


async def prepare(factory: Factory, document_id: int, version: int, rag: Rag) -> int:
    """Parse and chunk the stored upload, replacing whatever chunks the document had.
    Returns the number of chunks. Raises UnreadableDocument for content we cannot use."""
    async with factory() as db:
        doc = await _current(db, document_id, version)
        data, media_type = doc.content, doc.media_type
    text = await asyncio.to_thread(parse, data, media_type)
    chunks = await asyncio.to_thread(chunk_text, text, rag.chunk_size, rag.chunk_overlap)
    if len(chunks) > rag.max_chunks_per_document:
        raise UnreadableDocument(
            f"the document makes {len(chunks)} chunks; the limit is {rag.max_chunks_per_document}"
        )
    async with factory() as db:
        doc = await _current(db, document_id, version)
        await db.execute(delete(KbChunk).where(KbChunk.document_id == document_id))
        rows = [
            {
                "id": new_id(),
                "knowledge_base_id": doc.knowledge_base_id,
                "document_id": document_id,
                "document_version": version,
                "ordinal": c.ordinal,
                "text": c.text,
                "start_char": c.start,
                "end_char": c.end,
            }
            for c in chunks
        ]
        for at in range(0, len(rows), 1000):
            await db.execute(KbChunk.__table__.insert(), rows[at : at + 1000])
        doc.status, doc.error = PROCESSING, None
        doc.chunks_total, doc.chunks_embedded = len(chunks), 0
        await bump(db, doc.knowledge_base_id)
        await db.commit()
    return len(chunks)


async def embed_batch(
    factory: Factory, client: AsyncOpenAI, rag: Rag, document_id: int, version: int, start: int,
    end: int,
) -> int:  # fmt: skip
    """Embed chunks [start, end) that have no embedding yet (a retry redoes only what is
    missing) and update the progress counter. Returns how many were embedded."""
    async with factory() as db:
        await _current(db, document_id, version)
        rows = (
            await db.execute(
                select(KbChunk.id, KbChunk.text)
                .where(
                    KbChunk.document_id == document_id,
                    KbChunk.ordinal >= start,
                    KbChunk.ordinal < end,
                    KbChunk.embedding.is_(None),
                )
                .order_by(KbChunk.ordinal)
            )
        ).all()
    if rows:
        vectors = await embed_texts(
            client,
            rag.embedding_model,
            [body for _, body in rows],
            rag.embed_batch_size,
            rag.embedding_dimensions,
        )
    async with factory() as db:
        doc = await _current(db, document_id, version)
        if rows:
            stmt = (
                update(KbChunk.__table__)
                .where(KbChunk.__table__.c.id == bindparam("cid"))
                .values(embedding=bindparam("vec"))
            )
            pairs = zip(rows, vectors, strict=True)
            params = [{"cid": cid, "vec": to_bytes(v)} for (cid, _), v in pairs]
            await db.execute(stmt, params)
        # only chunks without an embedding were embedded, so a retried batch never counts twice
        doc.chunks_embedded = min(doc.chunks_embedded + len(rows), doc.chunks_total)
        await db.commit()
    return len(rows)


async def finish(
    factory: Factory, document_id: int, version: int, status: str, error: str | None = None
) -> None:
    """Mark the document ready (searchable from now on) or failed (its chunks removed)."""
    async with factory() as db:
        doc = await _current(db, document_id, version)
        if status == FAILED:
            await db.execute(delete(KbChunk).where(KbChunk.document_id == document_id))
            doc.chunks_embedded = 0
        doc.status, doc.error = status, (error or None) and error[:MAX_ERROR]
        await bump(db, doc.knowledge_base_id)
        await db.commit()


async def add_indexed_document(
    factory: Factory,
    kb_id: int,
    name: str,
    chunks: list[tuple[str, int, int]],
    vectors: np.ndarray,
    batch: int = 2000,
) -> int:
    """Store a document that is already chunked and embedded (text, start, end per chunk) as
    ready: bulk imports and benchmarks, without the ingestion workflow. Returns its id."""
    doc_id = new_id()
    async with factory() as db:
        db.add(
            KbDocument(
                id=doc_id, knowledge_base_id=kb_id, name=name, media_type="text/plain",
                status=PROCESSING, version=1, content_hash="", size_bytes=0, content=b"",
                chunks_total=len(chunks), chunks_embedded=len(chunks),
            )
        )  # fmt: skip
        await db.commit()
    for at in range(0, len(chunks), batch):
        rows = [
            {
                "id": new_id(), "knowledge_base_id": kb_id, "document_id": doc_id,
                "document_version": 1, "ordinal": at + i, "text": body, "start_char": start,
                "end_char": end, "embedding": to_bytes(vectors[at + i]),
            }
            for i, (body, start, end) in enumerate(chunks[at : at + batch])
        ]  # fmt: skip
        async with factory() as db:
            await db.execute(KbChunk.__table__.insert(), rows)
            await db.commit()
    await finish(factory, doc_id, 1, READY)
    return doc_id


async def delete_document(db: AsyncSession, doc: KbDocument) -> None:
    """Remove the document and every chunk of it, in one transaction."""
    await db.execute(delete(KbChunk).where(KbChunk.document_id == doc.id))
    await db.delete(doc)
    await bump(db, doc.knowledge_base_id)
    await db.commit()


async def delete_knowledge_base(db: AsyncSession, kb: KnowledgeBase) -> None:
    await db.execute(delete(KbChunk).where(KbChunk.knowledge_base_id == kb.id))
    await db.execute(delete(KbDocument).where(KbDocument.knowledge_base_id == kb.id))
    await db.execute(
        delete(AgentKnowledgeBase).where(AgentKnowledgeBase.knowledge_base_id == kb.id)
    )
    await db.delete(kb)
    await db.commit()


async def agent_knowledge_bases(db: AsyncSession, agent_id: int) -> list[int]:
    rows = await db.execute(
        select(AgentKnowledgeBase.knowledge_base_id)
        .where(AgentKnowledgeBase.agent_id == agent_id)
        .order_by(AgentKnowledgeBase.knowledge_base_id)
    )
    return [int(kb) for kb in rows.scalars()]
