"""What agents know: knowledge bases (documents uploaded into them, ingested by the
`IngestDocument` workflow, searched by AG_RAG steps), which agents use which, and memory —
what an agent remembers on its own and about a user.

Anyone else's knowledge base, document, agent or memory entry is "not found", exactly like a
missing one. Ids arrive as they came from outside (decimal strings) or already parsed; a
malformed one names nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import openai
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from chatee import memory
from chatee.agents import owned_agent
from chatee.errors import ChateeError, Conflict, Invalid, NotFound, Unavailable
from chatee.ids import new_id, parse_id
from chatee.models import AgentKnowledgeBase, KbDocument, KnowledgeBase, Memory
from chatee.rag import documents
from chatee.rag.embed import EmbeddingRejected
from chatee.rag.index import Hit
from chatee.rag.parse import UnsupportedMediaType, media_type_for
from chatee.services import Services
from workflows.ingest import IngestInput
from workflows.names import INGEST_WORKFLOW, RAG_QUEUE, ingest_workflow_id


class UnsupportedUpload(ChateeError):
    """An upload in a format no parser reads."""

    status = 415
    default_code = "unsupported-media-type"


@dataclass(frozen=True)
class Upload:
    """An uploaded file as it arrived: its bytes, and the name and type the client declared."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None


def _id(raw: int | str, what: str) -> int:
    return raw if isinstance(raw, int) else parse_id(raw, what)


# -- knowledge bases ---------------------------------------------------------------------------


async def owned_kb(db: AsyncSession, owner_id: int, kb_id: int | str) -> KnowledgeBase:
    kb = await db.get(KnowledgeBase, _id(kb_id, "knowledge base"))
    if kb is None or kb.owner_id != owner_id:
        raise NotFound("knowledge base not found")
    return kb


async def create_knowledge_base(
    db: AsyncSession, owner_id: int, name: str, description: str
) -> KnowledgeBase:
    kb = KnowledgeBase(
        id=new_id(), owner_id=owner_id, name=name, description=description, version=0
    )
    db.add(kb)
    await db.commit()
    return kb


async def knowledge_bases(db: AsyncSession, owner_id: int) -> list[tuple[KnowledgeBase, int]]:
    """The owner's knowledge bases, each with its number of documents."""
    counts = (
        select(KbDocument.knowledge_base_id, func.count().label("n"))
        .group_by(KbDocument.knowledge_base_id)
        .subquery()
    )
    rows = await db.execute(
        select(KnowledgeBase, counts.c.n)
        .outerjoin(counts, counts.c.knowledge_base_id == KnowledgeBase.id)
        .where(KnowledgeBase.owner_id == owner_id)
        .order_by(KnowledgeBase.id)
    )
    return [(kb, n or 0) for kb, n in rows]


async def knowledge_base(
    db: AsyncSession, owner_id: int, kb_id: int | str
) -> tuple[KnowledgeBase, int]:
    """One of the owner's knowledge bases and its number of documents."""
    kb = await owned_kb(db, owner_id, kb_id)
    stmt = select(func.count()).select_from(KbDocument).where(KbDocument.knowledge_base_id == kb.id)
    return kb, int(await db.scalar(stmt) or 0)


async def delete_knowledge_base(db: AsyncSession, owner_id: int, kb_id: int | str) -> None:
    """Deletes its documents and every chunk, and detaches it from agents. An ingestion still
    running finds its document gone and stops."""
    kb = await owned_kb(db, owner_id, kb_id)
    await documents.delete_knowledge_base(db, kb)


async def search(
    svc: Services,
    db: AsyncSession,
    owner_id: int,
    kb_id: int | str,
    query: str,
    top_k: int | None,
    score_threshold: float | None,
) -> list[Hit]:
    """What an AG_RAG step would find in this knowledge base, with both retrievers' ranks."""
    kb = await owned_kb(db, owner_id, kb_id)
    try:
        return await svc.retriever.search(db, [kb.id], query, top_k, score_threshold)
    except (openai.APIError, EmbeddingRejected):  # logged by nobody: it may quote a key
        raise Unavailable("the embeddings provider") from None


# -- documents ---------------------------------------------------------------------------------


async def owned_document(
    db: AsyncSession, owner_id: int, kb_id: int | str, doc_id: int | str
) -> KbDocument:
    kb = await owned_kb(db, owner_id, kb_id)
    doc = await db.get(KbDocument, _id(doc_id, "document"))
    if doc is None or doc.knowledge_base_id != kb.id:
        raise NotFound("document not found")
    return doc


async def documents_of(db: AsyncSession, owner_id: int, kb_id: int | str) -> list[KbDocument]:
    kb = await owned_kb(db, owner_id, kb_id)
    rows = await db.execute(
        select(KbDocument).where(KbDocument.knowledge_base_id == kb.id).order_by(KbDocument.id)
    )
    return list(rows.scalars())


async def upload_document(
    svc: Services,
    db: AsyncSession,
    owner_id: int,
    kb_id: int | str,
    upload: Upload,
    name: str | None = None,
) -> KbDocument:
    """Store the upload (text, Markdown, HTML or PDF) and start ingesting it in the background;
    the document's `status` and progress tell how far it got."""
    kb = await owned_kb(db, owner_id, kb_id)
    filename, media_type = _check_upload(upload, name)
    doc = KbDocument(
        id=new_id(),
        knowledge_base_id=kb.id,
        name=filename,
        media_type=media_type,
        status="pending",
        version=1,
        content_hash=documents.content_hash(upload.data),
        size_bytes=len(upload.data),
        content=upload.data,
        chunks_total=0,
        chunks_embedded=0,
    )
    db.add(doc)
    await db.commit()
    try:
        await _start_ingestion(svc, doc)
    except RPCError:
        await db.delete(doc)  # nothing was accepted: no half-made document stays behind
        await db.commit()
        raise Unavailable("Temporal") from None
    return doc


async def replace_document(
    svc: Services,
    db: AsyncSession,
    owner_id: int,
    kb_id: int | str,
    doc_id: int | str,
    upload: Upload,
    name: str | None = None,
) -> KbDocument:
    """Re-upload: a new version replaces the document's chunks once it is ingested (until
    then the document is not searchable). The same bytes again change nothing."""
    doc = await owned_document(db, owner_id, kb_id, doc_id)
    filename, media_type = _check_upload(upload, name or doc.name)
    data = upload.data
    digest = documents.content_hash(data)
    if digest == doc.content_hash and doc.status in ("ready", "pending", "processing"):
        return doc
    doc.name, doc.media_type, doc.content = filename, media_type, data
    doc.content_hash, doc.size_bytes = digest, len(data)
    doc.version += 1
    doc.status, doc.error = "pending", None
    doc.chunks_total = doc.chunks_embedded = 0
    await documents.bump(db, doc.knowledge_base_id)  # the old chunks stop being searchable
    await db.commit()
    await _start_or_fail(svc, db, doc)
    return doc


async def retry_document(
    svc: Services, db: AsyncSession, owner_id: int, kb_id: int | str, doc_id: int | str
) -> KbDocument:
    """Ingest a failed document again; its chunks are replaced, never duplicated."""
    doc = await owned_document(db, owner_id, kb_id, doc_id)
    if doc.status != "failed":
        raise Conflict(f"only a failed document can be retried (this one is {doc.status})")
    doc.status, doc.error = "pending", None
    await db.commit()
    await _start_or_fail(svc, db, doc)
    return doc


async def delete_document(
    db: AsyncSession, owner_id: int, kb_id: int | str, doc_id: int | str
) -> None:
    """Removes the document and every chunk of it at once."""
    doc = await owned_document(db, owner_id, kb_id, doc_id)
    await documents.delete_document(db, doc)


def _check_upload(upload: Upload, name: str | None) -> tuple[str, str]:
    """The document's name and media type, or why the upload cannot be one."""
    filename = (name or upload.filename or "").strip()[:255]
    if not filename:
        raise Invalid("file: the upload needs a name")
    try:
        media_type = media_type_for(filename, upload.content_type)
    except UnsupportedMediaType as exc:
        raise UnsupportedUpload(str(exc)) from None
    if not upload.data:
        raise Invalid("file: the upload is empty")
    return filename, media_type


async def _start_ingestion(svc: Services, doc: KbDocument) -> None:
    rag = svc.settings.rag
    await svc.temporal.start_workflow(
        INGEST_WORKFLOW,
        IngestInput(str(doc.id), doc.version, rag.embed_batch_size, rag.ingest_max_attempts),
        id=ingest_workflow_id(doc.id),
        task_queue=RAG_QUEUE,
        # a re-upload or retry replaces whatever run is still going for this document
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"ingest {doc.name} (v{doc.version})",
    )


async def _start_or_fail(svc: Services, db: AsyncSession, doc: KbDocument) -> None:
    """Start ingestion; if Temporal is unreachable the document is `failed` (retry later)."""
    try:
        await _start_ingestion(svc, doc)
    except RPCError:
        doc.status, doc.error = "failed", "ingestion could not be started; retry it"
        await db.commit()
        raise Unavailable("Temporal") from None


# -- agents ↔ knowledge bases ------------------------------------------------------------------


async def agent_knowledge_bases(
    db: AsyncSession, owner_id: int, agent_id: int | str
) -> tuple[int, list[int]]:
    """The agent's id and the knowledge bases its AG_RAG steps search."""
    agent = (await owned_agent(db, owner_id, agent_id)).id
    return agent, await documents.agent_knowledge_bases(db, agent)


async def set_agent_knowledge_bases(
    db: AsyncSession, owner_id: int, agent_id: int | str, kb_ids: Sequence[int | str]
) -> tuple[int, list[int]]:
    """Replace the set of knowledge bases the agent's AG_RAG steps search; each must be the
    owner's."""
    agent = (await owned_agent(db, owner_id, agent_id)).id
    wanted = sorted({_id(raw, "knowledge base") for raw in kb_ids})
    if wanted:
        owned = set(
            (
                await db.execute(
                    select(KnowledgeBase.id).where(
                        KnowledgeBase.id.in_(wanted), KnowledgeBase.owner_id == owner_id
                    )
                )
            ).scalars()
        )
        missing = [str(i) for i in wanted if i not in owned]
        if missing:
            raise NotFound(f"knowledge base {', '.join(missing)} not found")
    current = set(await documents.agent_knowledge_bases(db, agent))
    for kb in current - set(wanted):
        row = await db.get(AgentKnowledgeBase, (agent, kb))
        if row is not None:
            await db.delete(row)
    for kb in set(wanted) - current:
        db.add(AgentKnowledgeBase(agent_id=agent, knowledge_base_id=kb))
    await db.commit()
    return agent, wanted


# -- memory ------------------------------------------------------------------------------------
# The same store the AG_MEMORY_LOAD / AG_MEMORY_STORE steps read and write (chatee/memory.py).


async def agent_memory(
    db: AsyncSession, user_id: int, agent_id: int | str, scope: str = "all"
) -> Sequence[Memory]:
    """The agent's own entries and its entries about the user (what AG_MEMORY_LOAD loads)."""
    agent = (await owned_agent(db, user_id, agent_id)).id
    return await memory.entries(db, agent, user_id, scope)


async def remember(
    svc: Services,
    db: AsyncSession,
    user_id: int,
    agent_id: int | str,
    key: str,
    value: str,
    scope: str = "user",
) -> Memory:
    """Insert or replace the entry under `key`: the agent's own (`scope` "agent") or about the
    user ("user"). The user must own the agent."""
    agent = (await owned_agent(db, user_id, agent_id)).id
    owner = memory.AGENT_WIDE if scope == "agent" else user_id
    return await memory.put(svc.sessionmaker, agent, owner, key, value)


async def forget(db: AsyncSession, user_id: int, agent_id: int | str, entry_id: int | str) -> None:
    """Delete one of the agent's entries: its own, or one about this user."""
    agent = (await owned_agent(db, user_id, agent_id)).id
    row = await db.get(Memory, _id(entry_id, "memory entry"))
    if row is None or row.agent_id != agent or row.user_id not in (memory.AGENT_WIDE, user_id):
        raise NotFound("memory entry not found")
    await db.delete(row)
    await db.commit()


async def forget_about_me(db: AsyncSession, user_id: int, entry_id: int | str) -> None:
    """Delete an entry some agent keeps about this user."""
    row = await db.get(Memory, _id(entry_id, "memory entry"))
    if row is None or row.user_id != user_id:
        raise NotFound("memory entry not found")
    await db.delete(row)
    await db.commit()
