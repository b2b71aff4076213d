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


class SessionMessage(Model):
    id: str
    role: str
    content: str
    turn_id: str
    created_at: datetime
    usage: dict[str, Any] | None = None


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
    created_at: datetime | None = None
    last_message_at: datetime | None = None


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
