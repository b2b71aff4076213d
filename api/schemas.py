"""Request and response models: the HTTP contract, documented in OpenAPI.

Ids are strings: 64-bit snowflakes do not fit a JavaScript number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatee.timefmt import Timestamp
from workflows.chain import DEFAULT_CHAIN, ChainError, parse_chain

Id = str
DoubleTexting = Literal["queue", "interrupt", "reject", "rollback"]
ToolPolicy = Literal["allow", "deny", "approve"]


PASSWORD_MAX = 256
DisplayName = Annotated[str, Field(min_length=1, max_length=64)]


class Credentials(BaseModel):
    """What logging in takes. Nothing is checked but size: a wrong password, however short,
    is answered 401 like a wrong username."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=256)  # sizes only bound the work; no one has such a name
    password: str = Field(max_length=1024)

    @field_validator("username")
    @classmethod
    def _case_insensitive(cls, username: str) -> str:
        """Usernames are case-insensitive on every database (MySQL's collation already is)."""
        return username.lower()


class Registration(Credentials):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=8, max_length=PASSWORD_MAX)
    display_name: DisplayName | None = Field(None, description="what others see; default: username")


class MeOut(BaseModel):
    id: Id
    username: str
    display_name: str
    created_at: Timestamp


class MeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: DisplayName | None = None


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=PASSWORD_MAX)
    new_password: str = Field(min_length=8, max_length=PASSWORD_MAX)


class DeleteMeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=PASSWORD_MAX)


class UserOut(BaseModel):
    """A public profile: what anyone signed in may see of a user."""

    id: Id
    username: str
    display_name: str


class UserPage(BaseModel):
    items: list[UserOut]


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
    created_at: Timestamp
    updated_at: Timestamp


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: Id
    title: str | None = Field(None, max_length=255)


class StepOut(BaseModel):
    index: int
    action: str
    status: str
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
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
    created_at: Timestamp
    state: SessionStateOut | None = None


class ToolCallOut(BaseModel):
    id: str
    name: str
    arguments: str = Field(description="JSON text, as the model wrote it")


class MessageOut(BaseModel):
    id: Id
    role: str
    content: str
    turn_id: Id
    created_at: Timestamp
    usage: dict[str, Any] | None = None
    tool_calls: list[ToolCallOut] | None = Field(
        None, description="an assistant message that asked for tools: the calls"
    )
    tool_call_id: str | None = Field(None, description="a tool message: the call it answers")
    name: str | None = Field(None, description="a tool message: the tool that answered")


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
