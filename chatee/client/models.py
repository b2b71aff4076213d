"""Typed results of the API. Unknown fields are kept (`model_extra`), so a newer server never
breaks an older SDK."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


@dataclass
class Tokens:
    """A login: the access token (bearer), the refresh token that buys the next pair, and
    when to refresh it (epoch seconds: 30 s before it expires, or after four fifths of a
    short lifetime; None if unknown, then only a 401 triggers a refresh)."""

    user_id: str
    access_token: str
    refresh_token: str | None = None
    refresh_at: float | None = None

    @classmethod
    def from_answer(cls, body: dict[str, Any]) -> Tokens:
        expires_in = body.get("expires_in")
        refresh_at = None
        if expires_in:
            refresh_at = time.time() + max(expires_in - 30, expires_in * 0.8)
        return cls(str(body["user_id"]), body["token"], body.get("refresh_token"), refresh_at)

    def expiring(self) -> bool:
        return self.refresh_at is not None and time.time() >= self.refresh_at


class User(Model):
    """A person: `me()` adds `created_at`."""

    id: str
    username: str
    display_name: str | None = None
    created_at: datetime | None = None


class Agent(Model):
    id: str
    name: str
    system_prompt: str = ""
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    mcp_servers: list[str] = []
    chain: list[Any] = []
    double_texting: str = "queue"
    memory: dict[str, Any] = {}
    tool_policy: dict[str, str] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Step(Model):
    index: int
    action: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    result: str | None = None


class ActiveTurn(Model):
    turn_id: str
    message_id: str
    status: str
    steps: list[Step] = []


class SessionState(Model):
    status: str
    queue_length: int = 0
    turns_completed: int = 0
    active_turn: ActiveTurn | None = None
    pending_human_request: str | None = None


class Session(Model):
    id: str
    agent_id: str
    title: str | None = None
    workflow_id: str
    status: str
    created_at: datetime | None = None
    state: SessionState | None = None


class ToolCallRecord(Model):
    """A tool call an assistant message asked for; `arguments` is JSON text, as the model
    wrote it."""

    id: str
    name: str
    arguments: str


class SessionMessage(Model):
    """A stored message of a session. An assistant message that asked for tools has
    `tool_calls`; a tool message has `tool_call_id` and `name`; a reply that drew on a
    knowledge base has its `citations`."""

    id: str
    role: str
    content: str
    turn_id: str
    created_at: datetime
    usage: dict[str, Any] | None = None
    tool_calls: list[ToolCallRecord] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    citations: list[dict[str, Any]] | None = None


class SessionMessagePage(Model):
    items: list[SessionMessage]
    next_before: str | None = None


class Accepted(Model):
    """A queued turn (`POST /chat/send`)."""

    turn_id: str
    message_id: str


class Conversation(Model):
    id: str
    type: str
    title: str | None = None
    parent_id: str | None = None
    member_count: int = 0
    last_seq: int = 0
    last_read_seq: int = 0
    unread: int = 0
    role: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    last_message_at: datetime | None = None


class Member(Model):
    """Someone in a conversation: a person (`kind` "user") or an agent; `role` is owner,
    admin or member."""

    id: str
    kind: str = "user"
    role: str = "member"
    name: str = ""


class ConversationMessage(Model):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    sender_type: str = "user"
    content: str = ""
    client_msg_id: str | None = None
    created_at: datetime
    sender_name: str | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    reactions: list[dict[str, Any]] = []


class ConversationMessagePage(Model):
    items: list[ConversationMessage]
    next_before_seq: int | None = None


class ReadMarker(Model):
    conversation_id: str
    last_read_seq: int
    unread: int


class InboxItem(Model):
    """One entry of the caller's gap-free inbox (`/sync`, WebSocket `message.new` and
    `inbox.event`): a new message (`kind` "message") or a change to one or to the
    conversation (`message.edited`, `message.deleted`, `reaction`, `member`; the kind's own
    fields, such as `reaction` or `member`, are in `model_extra`)."""

    inbox_seq: int
    conversation_id: str | None = None
    kind: str = "message"
    message: ConversationMessage | dict[str, Any] | None = Field(
        None, union_mode="left_to_right"
    )  # a dict if it is not a whole message
    message_id: str | None = None
    seq: int | None = None


class SyncPage(Model):
    items: list[InboxItem]
    next_after: int
    has_more: bool


# -- people and accounts ------------------------------------------------------------------------


class Presence(Model):
    user_id: str
    status: str  # online | offline
    last_seen: datetime | None = None


class ApiKey(Model):
    """A key of the caller's; `prefix` tells keys apart (the secret is never shown again)."""

    id: str
    name: str
    prefix: str
    scopes: list[str] = []
    created_at: datetime | None = None
    last_used_at: datetime | None = None


class NewApiKey(ApiKey):
    """What `create_api_key` answers: the key with its secret `key`, shown this once."""

    key: str


# -- knowledge bases and memory -----------------------------------------------------------------


class KnowledgeBase(Model):
    id: str
    name: str
    description: str = ""
    documents: int = 0  # how many documents it holds
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Progress(Model):
    chunks_total: int = 0
    chunks_embedded: int = 0


class Document(Model):
    """An uploaded document; `status` is pending, processing, ready (searchable) or failed
    (`error` says why; `retry_document`)."""

    id: str
    knowledge_base_id: str
    name: str
    media_type: str = ""
    status: str
    error: str | None = None
    version: int = 1
    size_bytes: int = 0
    content_hash: str = ""
    progress: Progress = Progress()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """Ingestion is over, one way or the other."""
        return self.status in ("ready", "failed")


class SearchHit(Model):
    """A passage retrieval found: `text` is `start`:`end` of the document's text; `score`
    fuses the lexical and vector ranks (each None when that retriever missed it)."""

    chunk_id: str
    document_id: str
    document_name: str
    ordinal: int
    start: int
    end: int
    text: str
    score: float
    lexical_rank: int | None = None
    vector_rank: int | None = None
    similarity: float | None = None


class AgentKnowledgeBases(Model):
    """The knowledge bases an agent's AG_RAG steps search."""

    agent_id: str
    knowledge_base_ids: list[str] = []


class MemoryEntry(Model):
    """What an agent remembers: on its own (`scope` "agent", for all its users) or about the
    caller ("user")."""

    id: str
    agent_id: str
    key: str
    value: str
    scope: str
    updated_at: datetime | None = None


# -- MCP servers --------------------------------------------------------------------------------


class McpServer(Model):
    """A registered MCP server. `headers` has the names only (values read `***`); `status` is
    registered, connected or error; `tools_count` is None until its tools were fetched."""

    id: str
    name: str
    transport: str
    url: str | None = None
    command: str | None = None
    args: list[str] = []
    headers: dict[str, str] = {}
    tool_policy: dict[str, str] = {}
    status: str = "registered"
    server_info: dict[str, Any] | None = None
    tools_count: int | None = None
    tools_refreshed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class McpConnection(Model):
    """What `connect_mcp_server` found."""

    status: str
    server_info: dict[str, Any] = {}
    tools_count: int = 0


class McpTool(Model):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = {}


class McpToolResult(Model):
    """A tool's answer; a tool that failed on its own says so with `is_error` (not raised)."""

    content: list[dict[str, Any]] = []
    structured_content: Any = None
    is_error: bool = False

    @property
    def text(self) -> str:
        """The text parts of `content`, joined."""
        return "".join(str(c.get("text", "")) for c in self.content if c.get("type") == "text")
