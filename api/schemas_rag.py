"""Request and response models of knowledge bases, retrieval and memory (OpenAPI contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import MessageOut, MessagePage
from chatee.timefmt import Timestamp

Id = str
DocumentStatus = Literal["pending", "processing", "ready", "failed"]


class KnowledgeBaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=4000)


class KnowledgeBaseOut(BaseModel):
    id: Id
    name: str
    description: str
    documents: int = 0
    created_at: Timestamp
    updated_at: Timestamp


class Progress(BaseModel):
    chunks_total: int
    chunks_embedded: int


class DocumentOut(BaseModel):
    id: Id
    knowledge_base_id: Id
    name: str
    media_type: str
    status: DocumentStatus
    error: str | None
    version: int
    size_bytes: int
    content_hash: str
    progress: Progress
    created_at: Timestamp
    updated_at: Timestamp


class DocumentPage(BaseModel):
    items: list[DocumentOut]


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=50)
    score_threshold: float | None = Field(None, ge=0, le=1)


class SearchHit(BaseModel):
    chunk_id: Id
    document_id: Id
    document_name: str
    ordinal: int
    start: int
    end: int
    text: str
    score: float
    lexical_rank: int | None
    vector_rank: int | None
    similarity: float | None


class SearchOut(BaseModel):
    items: list[SearchHit]


class AgentKnowledgeBasesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    knowledge_base_ids: list[Id] = Field(max_length=50)


class AgentKnowledgeBasesOut(BaseModel):
    agent_id: Id
    knowledge_base_ids: list[Id]


class Citation(BaseModel):
    """A knowledge-base passage (document fields) or an earlier message (`message_id`)."""

    document_id: Id | None = None
    document_name: str | None = None
    knowledge_base_id: Id | None = None
    chunk_id: Id | None = None
    start: int | None = None
    end: int | None = None
    message_id: Id | None = None
    score: float


class CitedMessageOut(MessageOut):
    citations: list[Citation] | None = None


class CitedMessagePage(MessagePage):
    items: list[CitedMessageOut]  # type: ignore[assignment]


MemoryScope = Literal["agent", "user"]


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(min_length=1, max_length=4000)
    scope: MemoryScope = "user"  # "agent": the agent's own memory, shared by all its users


class UserMemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: Id
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(min_length=1, max_length=4000)


class MemoryOut(BaseModel):
    id: Id
    agent_id: Id
    key: str
    value: str
    scope: MemoryScope
    updated_at: Timestamp


class MemoryPage(BaseModel):
    items: list[MemoryOut]
