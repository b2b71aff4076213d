"""SQL tables (SQLAlchemy 2 declarative). One schema for MySQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC — SQLite and MySQL both drop the zone."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    """A person. Usernames are stored lower-cased; `search_name` is the lower-cased display
    name (NULL once the account is deleted), so both prefix searches are index range scans on
    SQLite and MySQL alike (chatee/people.py `search_users`)."""

    __tablename__ = "users"
    __table_args__ = (Index("ix_users_search_name", "search_name"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64), default="", server_default="")
    search_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(64))
    system_prompt: Mapped[str] = mapped_column(LongText, default="")
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mcp_servers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    chain: Mapped[list[Any]] = mapped_column(JSON, default=list)
    double_texting: Mapped[str] = mapped_column(String(16), default="queue")
    memory: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # per-tool policy: {"<server>__<tool>": "allow" | "deny" | "approve"}; unlisted tools: allow
    tool_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("uq_sessions_user_agent_thread", "user_id", "agent_id", "thread_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    agent_id: Mapped[int] = mapped_column(BigInteger, index=True)
    title: Mapped[str | None] = mapped_column(String(255), nullable=True)
    workflow_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # a protocol client's own conversation id (AG-UI threadId): one session per thread
    thread_id: Mapped[str | None] = mapped_column(String(191), nullable=True)


class Message(Base):
    """A message of an agent session. `idempotency_key` makes a retried store a no-op."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_session_id_id", "session_id", "id"),
        Index("ix_messages_session_turn", "session_id", "turn_id"),
        Index("uq_messages_session_client_msg", "session_id", "client_msg_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    session_id: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(LongText)
    turn_id: Mapped[int] = mapped_column(BigInteger)
    client_msg_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # an assistant message that asked for tools: [{"id", "name", "arguments" (JSON text)}]
    tool_calls: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    # a tool result (role "tool") answers the call with this id, made to the tool of this name
    tool_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tool_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # AG_RAG: the sources a retrieval note found [{document_id, chunk_id, start, end, score…}]
    citations: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Turn(Base):
    """One agent turn: its outcome and token usage summed over every LLM step."""

    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    session_id: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16))  # completed | failed | cancelled
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    steps: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Memory(Base):
    """Key/value memory of an agent (`user_id` 0) or of an agent about one user."""

    __tablename__ = "memories"
    __table_args__ = (
        Index("uq_memories_agent_user_key", "agent_id", "user_id", "key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    agent_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger, default=0)
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(LongText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class McpServer(Base):
    """A user's registered MCP server. `headers` may hold secrets: never returned in full."""

    __tablename__ = "mcp_servers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(32))  # streamable_http | sse | stdio
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    command: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tool_policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    server_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tools: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    tools_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# -- messaging: conversations between people (and agents), inboxes ---------------------------


class Conversation(Base):
    """A private chat (two members, one per pair), a group, or a thread (topic) under a group.

    `last_seq` is the conversation's message counter: the row is locked while a send takes the
    next number, so `seq` is gap-free per conversation. A thread has no members of its own: it
    belongs to its parent group's members."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(16))  # private | group | thread
    title: Mapped[str | None] = mapped_column(String(255), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    # private chats only: "<smaller id>:<larger id>", so a pair has exactly one
    private_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ConversationMember(Base):
    """A user or an agent in a private chat or group, with a role (owner/admin/member)."""

    __tablename__ = "conversation_members"
    __table_args__ = (Index("ix_conversation_members_member", "member_id"),)

    conversation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), default="user")  # user | agent
    role: Mapped[str] = mapped_column(String(8), default="member")  # owner | admin | member
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConversationRead(Base):
    """A user's read marker in a conversation or thread; unread = last_seq - last_read_seq."""

    __tablename__ = "conversation_reads"

    conversation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    last_read_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class ConversationAgent(Base):
    """The one agent session (`AgentSession` workflow) of an agent in a conversation."""

    __tablename__ = "conversation_agents"

    conversation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    agent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    session_id: Mapped[int] = mapped_column(BigInteger)


class ConversationMessage(Base):
    """The message ledger: id, per-conversation `seq`, idempotency on the sender's
    `client_msg_id`, and whether its fan-out finished. The SQL message store keeps the body in
    `content`; the HBase store keeps it in HBase and leaves `content` empty."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        Index("uq_conversation_messages_seq", "conversation_id", "seq", unique=True),
        Index(
            "uq_conversation_messages_client",
            "conversation_id",
            "sender_id",
            "client_msg_id",
            unique=True,
        ),
        Index("ix_conversation_messages_fanout", "fanout_status", "created_at"),
        # what of a conversation is still pending, in order (`ledger.earlier_pending`)
        Index("ix_conversation_messages_pending", "conversation_id", "fanout_status", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    conversation_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    sender_id: Mapped[int] = mapped_column(BigInteger)
    sender_type: Mapped[str] = mapped_column(String(8), default="user")  # user | agent
    client_msg_id: Mapped[str] = mapped_column(String(128))
    content: Mapped[str | None] = mapped_column(LongText, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fanout_status: Mapped[str] = mapped_column(String(8), default="pending")  # pending | done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # a tombstone: content gone, place and `seq` kept
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class MessageChange(Base):
    """A change members must see (an edit, a deletion, a reaction, a membership change): the
    ledger row its fan-out goes through, like a message's — `fanout_status` says whether every
    member's inbox has it. `data` holds what the change itself says (an emoji and the count it
    left, a member and their role); message bodies stay in the message store."""

    __tablename__ = "message_changes"
    __table_args__ = (
        Index("ix_message_changes_fanout", "fanout_status", "created_at"),
        Index("ix_message_changes_pending", "conversation_id", "fanout_status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    conversation_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger, default=0)  # 0: not about a message
    seq: Mapped[int] = mapped_column(BigInteger, default=0)  # that message's seq
    kind: Mapped[str] = mapped_column(String(24))
    actor_id: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # users who must get it besides the audience's members (someone just removed)
    extra_users: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    fanout_status: Mapped[str] = mapped_column(String(8), default="pending")  # pending | done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# emoji compare byte for byte (MySQL's default collations take all of them to be equal)
EmojiText = String(64).with_variant(mysql.VARCHAR(64, collation="utf8mb4_bin"), "mysql", "mariadb")


class MessageReaction(Base):
    """One person's reaction with one emoji to one message (so a second PUT changes nothing)."""

    __tablename__ = "message_reactions"

    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    emoji: Mapped[str] = mapped_column(EmojiText, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboxEntry(Base):
    """One entry in one user's inbox: a message (`kind` `message`), or a change to one or to
    the conversation (`change_id` names the `message_changes` row; 0 for a message).
    `inbox_seq` is gap-free per user (taken from `user_inbox_counters` in the same
    transaction); (user, message, change) is unique, so a retried fan-out never delivers
    twice."""

    __tablename__ = "inbox_entries"
    __table_args__ = (
        Index("uq_inbox_entries_user_item", "user_id", "message_id", "change_id", unique=True),
    )

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    inbox_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_id: Mapped[int] = mapped_column(BigInteger)
    conversation_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(24), default="message", server_default="message")
    change_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UserInboxCounter(Base):
    """The last `inbox_seq` handed out to a user; locked by each delivery to that user."""

    __tablename__ = "user_inbox_counters"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


# -- knowledge bases (RAG): documents, chunks, and which agents use them ---------------------

LongBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class KnowledgeBase(Base):
    """A user's collection of documents. `version` is bumped whenever its searchable chunks
    change, so in-process vector matrices know when to reload."""

    __tablename__ = "knowledge_bases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AgentKnowledgeBase(Base):
    """A knowledge base attached to an agent: its AG_RAG steps search it."""

    __tablename__ = "agent_knowledge_bases"
    __table_args__ = (Index("ix_agent_knowledge_bases_kb", "knowledge_base_id"),)

    agent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    knowledge_base_id: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KbDocument(Base):
    """An uploaded document and its ingestion state. The upload itself is kept here, so the
    ingestion workflow passes ids only. `version` grows with each re-upload."""

    __tablename__ = "kb_documents"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    knowledge_base_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # processing|ready|failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    content: Mapped[bytes] = mapped_column(LongBlob)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_embedded: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class KbChunk(Base):
    """A passage of a document: its text, where it sits in the parsed text, and its embedding
    (float32 little-endian bytes). (document, ordinal) is unique, so ingestion never
    duplicates. Lexical index: FTS5 table `kb_chunks_fts` (SQLite) / FULLTEXT (MySQL)."""

    __tablename__ = "kb_chunks"
    __table_args__ = (
        Index("uq_kb_chunks_document_ordinal", "document_id", "ordinal", unique=True),
        Index("ix_kb_chunks_kb", "knowledge_base_id", "id"),  # covers the vector cache check
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    knowledge_base_id: Mapped[int] = mapped_column(BigInteger)
    document_id: Mapped[int] = mapped_column(BigInteger)
    document_version: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(LongText)
    start_char: Mapped[int] = mapped_column(Integer)
    end_char: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


# -- security: refresh tokens (one family per login) and API keys -----------------------------


class RefreshToken(Base):
    """One refresh token of a login (`family_id`). Only its keyed hash is stored. A token is
    used once (`used_at`); presenting a used one again revokes the whole family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    family_id: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A service client's key: shown once, stored as a keyed hash, limited to `scopes`."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a key
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
