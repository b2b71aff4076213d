"""Request and response models: the HTTP contract, documented in OpenAPI.

Ids are strings: 64-bit snowflakes do not fit a JavaScript number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflows.chain import DEFAULT_CHAIN, ChainError, parse_chain

Id = str
DoubleTexting = Literal["queue", "interrupt", "reject", "rollback"]
ToolPolicy = Literal["allow", "deny", "approve"]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=8, max_length=256)

    @field_validator("username")
    @classmethod
    def _case_insensitive(cls, username: str) -> str:
        """Usernames are case-insensitive on every database (MySQL's collation already is)."""
        return username.lower()


class AuthResult(BaseModel):
    user_id: Id
    token: str
    token_type: str = "bearer"


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    system_prompt: str = Field("", max_length=32 * 1024)
    provider: str | None = Field(
        None, description="openai, deepseek, or a name from `llm_providers`; default from config"
    )
    model: str | None = Field(None, min_length=1, max_length=128)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    mcp_servers: list[Id] = Field(default_factory=list, max_length=32)
    chain: list[Any] = Field(
        default_factory=lambda: list(DEFAULT_CHAIN),
        description='action names or objects, e.g. ["AG_MEMORY_LOAD", {"type": "AG_RAG", '
        '"top_k": 4}, "AG_SELF_GEN"]',
    )
    double_texting: DoubleTexting = "queue"
    memory: dict[str, Any] = Field(default_factory=dict)
    tool_policy: dict[str, ToolPolicy] = Field(
        default_factory=dict, description='per tool ("<server>__<tool>"): allow, deny or approve'
    )

    @field_validator("chain")
    @classmethod
    def _valid_chain(cls, chain: list[Any]) -> list[Any]:
        try:
            parse_chain(chain)
        except ChainError as exc:
            raise ValueError(str(exc)) from None
        return chain


class AgentOut(BaseModel):
    id: Id
    name: str
    system_prompt: str
    provider: str
    model: str
    temperature: float | None
    max_tokens: int | None
    mcp_servers: list[Id]
    chain: list[Any]
    double_texting: str
    memory: dict[str, Any]
    tool_policy: dict[str, str]
    created_at: datetime
    updated_at: datetime


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: Id
    title: str | None = Field(None, max_length=255)


class StepOut(BaseModel):
    index: int
    action: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    result: str | None = None


class TurnOut(BaseModel):
    turn_id: Id
    message_id: Id
    status: str
    steps: list[StepOut]


class SessionStateOut(BaseModel):
    status: str
    queue_length: int
    turns_completed: int
    active_turn: TurnOut | None
    pending_human_request: str | None = None


class SessionOut(BaseModel):
    id: Id
    agent_id: Id
    title: str | None
    workflow_id: str
    status: str
    created_at: datetime
    state: SessionStateOut | None = None


class MessageOut(BaseModel):
    id: Id
    role: str
    content: str
    turn_id: Id
    created_at: datetime
    usage: dict[str, Any] | None = None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_before: Id | None


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: Id
    content: str = Field(min_length=1)
    client_msg_id: str | None = Field(None, min_length=1, max_length=128)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turn_id: Id | None = Field(None, description="cancel only if this turn is the running one")


class HumanReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64, pattern=r"^\d+-\d+$")
    content: str = Field(min_length=1)


class ChatAccepted(BaseModel):
    turn_id: Id
    message_id: Id


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]
