"""Knowledge bases: documents uploaded into them (ingested by the `IngestDocument` workflow),
a search endpoint to see what retrieval finds, and which agents use them. Anyone else's
knowledge base, document or agent is a 404. The flow is in chatee/knowledge.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response, UploadFile, status

from api.deps import DB, Svc, UserId
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
from chatee import knowledge
from chatee.knowledge import Upload
from chatee.models import KbDocument, KnowledgeBase

router = APIRouter(tags=["knowledge bases"])
KB = "/knowledge-bases"
FileName = Annotated[str | None, Form(max_length=255)]


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


@router.post(KB, status_code=status.HTTP_201_CREATED)
async def create_knowledge_base(body: KnowledgeBaseIn, user_id: UserId, db: DB) -> KnowledgeBaseOut:
    return kb_out(await knowledge.create_knowledge_base(db, user_id, body.name, body.description))


@router.get(KB)
async def list_knowledge_bases(user_id: UserId, db: DB) -> list[KnowledgeBaseOut]:
    return [kb_out(kb, n) for kb, n in await knowledge.knowledge_bases(db, user_id)]


@router.get(KB + "/{kb_id}")
async def get_knowledge_base(kb_id: str, user_id: UserId, db: DB) -> KnowledgeBaseOut:
    return kb_out(*await knowledge.knowledge_base(db, user_id, kb_id))


@router.delete(KB + "/{kb_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_knowledge_base(kb_id: str, user_id: UserId, db: DB) -> Response:
    """Deletes its documents and every chunk, and detaches it from agents. An ingestion still
    running finds its document gone and stops."""
    await knowledge.delete_knowledge_base(db, user_id, kb_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(KB + "/{kb_id}/search")
async def search(kb_id: str, body: SearchIn, user_id: UserId, db: DB, svc: Svc) -> SearchOut:
    """What an AG_RAG step would find in this knowledge base, with both retrievers' ranks."""
    hits = await knowledge.search(
        svc, db, user_id, kb_id, body.query, body.top_k, body.score_threshold
    )
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


async def _upload(file: UploadFile) -> Upload:
    return Upload(await file.read(), file.filename, file.content_type)


@router.post(KB + "/{kb_id}/documents", status_code=status.HTTP_202_ACCEPTED)
async def upload_document(
    kb_id: str, file: UploadFile, user_id: UserId, db: DB, svc: Svc, name: FileName = None
) -> DocumentOut:
    """Multipart upload (`file`, optional `name`): text, Markdown, HTML or PDF. Ingestion runs
    in the background; poll the document for `status` and `progress`."""
    upload = await _upload(file)
    return doc_out(await knowledge.upload_document(svc, db, user_id, kb_id, upload, name))


@router.get(KB + "/{kb_id}/documents")
async def list_documents(kb_id: str, user_id: UserId, db: DB) -> DocumentPage:
    return DocumentPage(
        items=[doc_out(d) for d in await knowledge.documents_of(db, user_id, kb_id)]
    )


@router.get(KB + "/{kb_id}/documents/{doc_id}")
async def get_document(kb_id: str, doc_id: str, user_id: UserId, db: DB) -> DocumentOut:
    return doc_out(await knowledge.owned_document(db, user_id, kb_id, doc_id))


@router.put(KB + "/{kb_id}/documents/{doc_id}", status_code=status.HTTP_202_ACCEPTED)
async def replace_document(
    kb_id: str,
    doc_id: str,
    file: UploadFile,
    user_id: UserId,
    db: DB,
    svc: Svc,
    name: FileName = None,
) -> DocumentOut:
    """Re-upload: a new version replaces the document's chunks once it is ingested (until
    then the document is not searchable). The same bytes again change nothing."""
    upload = await _upload(file)
    doc = await knowledge.replace_document(svc, db, user_id, kb_id, doc_id, upload, name)
    return doc_out(doc)


@router.post(KB + "/{kb_id}/documents/{doc_id}/retry", status_code=status.HTTP_202_ACCEPTED)
async def retry_document(kb_id: str, doc_id: str, user_id: UserId, db: DB, svc: Svc) -> DocumentOut:
    """Ingest a failed document again; its chunks are replaced, never duplicated."""
    return doc_out(await knowledge.retry_document(svc, db, user_id, kb_id, doc_id))


@router.delete(KB + "/{kb_id}/documents/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(kb_id: str, doc_id: str, user_id: UserId, db: DB) -> Response:
    """Removes the document and every chunk of it at once."""
    await knowledge.delete_document(db, user_id, kb_id, doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- agents ↔ knowledge bases ------------------------------------------------------------------


def links_out(agent_id: int, kb_ids: list[int]) -> AgentKnowledgeBasesOut:
    return AgentKnowledgeBasesOut(
        agent_id=str(agent_id), knowledge_base_ids=[str(i) for i in kb_ids]
    )


@router.get("/agents/{agent_id}/knowledge-bases")
async def agent_knowledge_bases(agent_id: str, user_id: UserId, db: DB) -> AgentKnowledgeBasesOut:
    return links_out(*await knowledge.agent_knowledge_bases(db, user_id, agent_id))


@router.put("/agents/{agent_id}/knowledge-bases")
async def set_agent_knowledge_bases(
    agent_id: str, body: AgentKnowledgeBasesIn, user_id: UserId, db: DB
) -> AgentKnowledgeBasesOut:
    """Replace the set of knowledge bases the agent's AG_RAG steps search."""
    links = await knowledge.set_agent_knowledge_bases(
        db, user_id, agent_id, body.knowledge_base_ids
    )
    return links_out(*links)
