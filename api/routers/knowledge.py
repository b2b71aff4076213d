"""Knowledge bases: documents uploaded into them (ingested by the `IngestDocument` workflow),
a search endpoint to see what retrieval finds, and which agents use them. Anyone else's
knowledge base, document or agent is a 404."""

from __future__ import annotations

from typing import Annotated

import openai
from fastapi import APIRouter, FastAPI, Form, Request, Response, UploadFile, status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from api.deps import DB, Res, UserId, parse_id
from api.errors import Problem, not_found, unavailable
from api.routers.agents import owned_agent_or_404
from api.schemas_rag import (
    AgentKnowledgeBasesIn,
    AgentKnowledgeBasesOut,
    DocumentOut,
    DocumentPage,
    KnowledgeBaseIn,
    KnowledgeBaseOut,
    Progress,
    SearchHit,
    SearchIn,
    SearchOut,
)
from chatee.ids import new_id
from chatee.llm import ClientPool
from chatee.models import AgentKnowledgeBase, KbDocument, KnowledgeBase
from chatee.rag import documents
from chatee.rag.embed import EmbeddingRejected
from chatee.rag.parse import UnsupportedMediaType, media_type_for
from chatee.rag.search import Retriever
from workflows.ingest import INGEST_WORKFLOW, IngestInput, ingest_workflow_id
from workflows.types import RAG_QUEUE

router = APIRouter(tags=["knowledge bases"])
KB = "/knowledge-bases"


def retriever(request: Request) -> Retriever:
    """One per API process, made on first use (its embeddings client pools connections)."""
    found = getattr(request.app.state, "retriever", None)
    if found is None:
        settings = request.app.state.resources.settings
        found = request.app.state.retriever = Retriever(settings, ClientPool(settings))
    return found


async def close(app: FastAPI) -> None:
    found = getattr(app.state, "retriever", None)
    if found is not None:
        await found.clients.close()


# -- knowledge bases ---------------------------------------------------------------------------


def kb_out(kb: KnowledgeBase, count: int = 0) -> KnowledgeBaseOut:
    return KnowledgeBaseOut(
        id=str(kb.id),
        name=kb.name,
        description=kb.description,
        documents=count,
        created_at=kb.created_at,
        updated_at=kb.updated_at,
    )


async def owned_kb(db: AsyncSession, user_id: int, raw_id: str) -> KnowledgeBase:
    kb = await db.get(KnowledgeBase, parse_id(raw_id, "knowledge base"))
    if kb is None or kb.owner_id != user_id:
        raise not_found("knowledge base")
    return kb


async def _document_count(db: AsyncSession, kb_id: int) -> int:
    stmt = select(func.count()).select_from(KbDocument).where(KbDocument.knowledge_base_id == kb_id)
    return int(await db.scalar(stmt) or 0)


@router.post(KB, status_code=status.HTTP_201_CREATED)
async def create_knowledge_base(body: KnowledgeBaseIn, user_id: UserId, db: DB) -> KnowledgeBaseOut:
    kb = KnowledgeBase(
        id=new_id(), owner_id=user_id, name=body.name, description=body.description, version=0
    )
    db.add(kb)
    await db.commit()
    return kb_out(kb)


@router.get(KB)
async def list_knowledge_bases(user_id: UserId, db: DB) -> list[KnowledgeBaseOut]:
    counts = (
        select(KbDocument.knowledge_base_id, func.count().label("n"))
        .group_by(KbDocument.knowledge_base_id)
        .subquery()
    )
    rows = await db.execute(
        select(KnowledgeBase, counts.c.n)
        .outerjoin(counts, counts.c.knowledge_base_id == KnowledgeBase.id)
        .where(KnowledgeBase.owner_id == user_id)
        .order_by(KnowledgeBase.id)
    )
    return [kb_out(kb, n or 0) for kb, n in rows]


@router.get(KB + "/{kb_id}")
async def get_knowledge_base(kb_id: str, user_id: UserId, db: DB) -> KnowledgeBaseOut:
    kb = await owned_kb(db, user_id, kb_id)
    return kb_out(kb, await _document_count(db, kb.id))


@router.delete(KB + "/{kb_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_knowledge_base(kb_id: str, user_id: UserId, db: DB) -> Response:
    """Deletes its documents and every chunk, and detaches it from agents. An ingestion still
    running finds its document gone and stops."""
    kb = await owned_kb(db, user_id, kb_id)
    await documents.delete_knowledge_base(db, kb)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(KB + "/{kb_id}/search")
async def search(
    kb_id: str, body: SearchIn, user_id: UserId, db: DB, request: Request
) -> SearchOut:
    """What an AG_RAG step would find in this knowledge base, with both retrievers' ranks."""
    kb = await owned_kb(db, user_id, kb_id)
    try:
        hits = await retriever(request).search(
            db, [kb.id], body.query, body.top_k, body.score_threshold
        )
    except (openai.APIError, EmbeddingRejected):  # logged by nobody: it may quote a key
        raise unavailable("the embeddings provider") from None
    return SearchOut(
        items=[
            SearchHit(
                chunk_id=str(h.chunk_id),
                document_id=str(h.document_id),
                document_name=h.document_name,
                ordinal=h.ordinal,
                start=h.start,
                end=h.end,
                text=h.text,
                score=round(h.score, 4),
                lexical_rank=h.lexical_rank,
                vector_rank=h.vector_rank,
                similarity=h.similarity,
            )
            for h in hits
        ]
    )


# -- documents ---------------------------------------------------------------------------------


def doc_out(doc: KbDocument) -> DocumentOut:
    return DocumentOut(
        id=str(doc.id),
        knowledge_base_id=str(doc.knowledge_base_id),
        name=doc.name,
        media_type=doc.media_type,
        status=doc.status,  # type: ignore[arg-type]
        error=doc.error,
        version=doc.version,
        size_bytes=doc.size_bytes,
        content_hash=doc.content_hash,
        progress=Progress(chunks_total=doc.chunks_total, chunks_embedded=doc.chunks_embedded),
        created_at=doc.created_at,
        updated_at=doc.updated_at,
    )


async def owned_document(db: AsyncSession, user_id: int, kb_id: str, doc_id: str) -> KbDocument:
    kb = await owned_kb(db, user_id, kb_id)
    doc = await db.get(KbDocument, parse_id(doc_id, "document"))
    if doc is None or doc.knowledge_base_id != kb.id:
        raise not_found("document")
    return doc


async def _read_upload(file: UploadFile, name: str | None) -> tuple[str, str, bytes]:
    filename = (name or file.filename or "").strip()[:255]
    if not filename:
        raise Problem(422, "file: the upload needs a name", "/problems/validation")
    try:
        media_type = media_type_for(filename, file.content_type)
    except UnsupportedMediaType as exc:
        raise Problem(415, str(exc), "/problems/unsupported-media-type") from None
    data = await file.read()
    if not data:
        raise Problem(422, "file: the upload is empty", "/problems/validation")
    return filename, media_type, data


async def _start_ingestion(res: Res, doc: KbDocument) -> None:
    rag = res.settings.rag
    await res.temporal.start_workflow(
        INGEST_WORKFLOW,
        IngestInput(str(doc.id), doc.version, rag.embed_batch_size, rag.ingest_max_attempts),
        id=ingest_workflow_id(doc.id),
        task_queue=RAG_QUEUE,
        # a re-upload or retry replaces whatever run is still going for this document
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"ingest {doc.name} (v{doc.version})",
    )


async def _start_or_fail(res: Res, db: AsyncSession, doc: KbDocument) -> None:
    """Start ingestion; if Temporal is unreachable the document is `failed` (retry later)."""
    try:
        await _start_ingestion(res, doc)
    except RPCError:
        doc.status, doc.error = "failed", "ingestion could not be started; retry it"
        await db.commit()
        raise unavailable("Temporal") from None


@router.post(KB + "/{kb_id}/documents", status_code=status.HTTP_202_ACCEPTED)
async def upload_document(
    kb_id: str,
    file: UploadFile,
    user_id: UserId,
    db: DB,
    res: Res,
    name: Annotated[str | None, Form(max_length=255)] = None,
) -> DocumentOut:
    """Multipart upload (`file`, optional `name`): text, Markdown, HTML or PDF. Ingestion runs
    in the background; poll the document for `status` and `progress`."""
    kb = await owned_kb(db, user_id, kb_id)
    filename, media_type, data = await _read_upload(file, name)
    doc = KbDocument(
        id=new_id(),
        knowledge_base_id=kb.id,
        name=filename,
        media_type=media_type,
        status="pending",
        version=1,
        content_hash=documents.content_hash(data),
        size_bytes=len(data),
        content=data,
        chunks_total=0,
        chunks_embedded=0,
    )
    db.add(doc)
    await db.commit()
    try:
        await _start_ingestion(res, doc)
    except RPCError:
        await db.delete(doc)  # nothing was accepted: no half-made document stays behind
        await db.commit()
        raise unavailable("Temporal") from None
    return doc_out(doc)


@router.get(KB + "/{kb_id}/documents")
async def list_documents(kb_id: str, user_id: UserId, db: DB) -> DocumentPage:
    kb = await owned_kb(db, user_id, kb_id)
    rows = await db.execute(
        select(KbDocument).where(KbDocument.knowledge_base_id == kb.id).order_by(KbDocument.id)
    )
    return DocumentPage(items=[doc_out(d) for d in rows.scalars()])


@router.get(KB + "/{kb_id}/documents/{doc_id}")
async def get_document(kb_id: str, doc_id: str, user_id: UserId, db: DB) -> DocumentOut:
    return doc_out(await owned_document(db, user_id, kb_id, doc_id))


@router.put(KB + "/{kb_id}/documents/{doc_id}", status_code=status.HTTP_202_ACCEPTED)
async def replace_document(
    kb_id: str,
    doc_id: str,
    file: UploadFile,
    user_id: UserId,
    db: DB,
    res: Res,
    name: Annotated[str | None, Form(max_length=255)] = None,
) -> DocumentOut:
    """Re-upload: a new version replaces the document's chunks once it is ingested (until
    then the document is not searchable). The same bytes again change nothing."""
    doc = await owned_document(db, user_id, kb_id, doc_id)
    filename, media_type, data = await _read_upload(file, name or doc.name)
    digest = documents.content_hash(data)
    if digest == doc.content_hash and doc.status in ("ready", "pending", "processing"):
        return doc_out(doc)
    doc.name, doc.media_type, doc.content = filename, media_type, data
    doc.content_hash, doc.size_bytes = digest, len(data)
    doc.version += 1
    doc.status, doc.error = "pending", None
    doc.chunks_total = doc.chunks_embedded = 0
    await documents.bump(db, doc.knowledge_base_id)  # the old chunks stop being searchable
    await db.commit()
    await _start_or_fail(res, db, doc)
    return doc_out(doc)


@router.post(KB + "/{kb_id}/documents/{doc_id}/retry", status_code=status.HTTP_202_ACCEPTED)
async def retry_document(kb_id: str, doc_id: str, user_id: UserId, db: DB, res: Res) -> DocumentOut:
    """Ingest a failed document again; its chunks are replaced, never duplicated."""
    doc = await owned_document(db, user_id, kb_id, doc_id)
    if doc.status != "failed":
        raise Problem(409, f"only a failed document can be retried (this one is {doc.status})")
    doc.status, doc.error = "pending", None
    await db.commit()
    await _start_or_fail(res, db, doc)
    return doc_out(doc)


@router.delete(KB + "/{kb_id}/documents/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(kb_id: str, doc_id: str, user_id: UserId, db: DB) -> Response:
    """Removes the document and every chunk of it at once."""
    doc = await owned_document(db, user_id, kb_id, doc_id)
    await documents.delete_document(db, doc)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- agents ↔ knowledge bases ------------------------------------------------------------------


@router.get("/agents/{agent_id}/knowledge-bases")
async def agent_knowledge_bases(agent_id: str, user_id: UserId, db: DB) -> AgentKnowledgeBasesOut:
    agent = (await owned_agent_or_404(db, user_id, agent_id)).id
    ids = await documents.agent_knowledge_bases(db, agent)
    return AgentKnowledgeBasesOut(agent_id=str(agent), knowledge_base_ids=[str(i) for i in ids])


@router.put("/agents/{agent_id}/knowledge-bases")
async def set_agent_knowledge_bases(
    agent_id: str, body: AgentKnowledgeBasesIn, user_id: UserId, db: DB
) -> AgentKnowledgeBasesOut:
    """Replace the set of knowledge bases the agent's AG_RAG steps search."""
    agent = (await owned_agent_or_404(db, user_id, agent_id)).id
    wanted = sorted({parse_id(raw, "knowledge base") for raw in body.knowledge_base_ids})
    if wanted:
        owned = set(
            (
                await db.execute(
                    select(KnowledgeBase.id).where(
                        KnowledgeBase.id.in_(wanted), KnowledgeBase.owner_id == user_id
                    )
                )
            ).scalars()
        )
        missing = [str(i) for i in wanted if i not in owned]
        if missing:
            raise not_found(f"knowledge base {', '.join(missing)}")
    current = set(await documents.agent_knowledge_bases(db, agent))
    for kb in current - set(wanted):
        row = await db.get(AgentKnowledgeBase, (agent, kb))
        if row is not None:
            await db.delete(row)
    for kb in set(wanted) - current:
        db.add(AgentKnowledgeBase(agent_id=agent, knowledge_base_id=kb))
    await db.commit()
    return AgentKnowledgeBasesOut(agent_id=str(agent), knowledge_base_ids=[str(i) for i in wanted])
