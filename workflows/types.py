"""Names and dataclasses shared by the workflows, the activities and the API.

Ids travel as strings: 64-bit snowflakes do not survive a JavaScript number (Temporal UI).
Payloads hold ids and short results only — bodies live in the message store (claim-check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AGENTS_QUEUE = "chatee-agents"
LLM_QUEUE = "chatee-llm"
TOOLS_QUEUE = "chatee-tools"
RAG_QUEUE = "chatee-rag"
MESSAGES_QUEUE = "chatee-messages"

SEARCH_ATTRIBUTES = ("ChateeAgentId", "ChateeUserId", "ChateeSessionId")

AG_SELF_GEN = "AG_SELF_GEN"


def session_workflow_id(session_id: int | str) -> str:
    return f"session-{session_id}"


@dataclass
class TurnOptions:
    """Activity tuning chosen by the API from its config and carried by the session."""

    llm_start_to_close_seconds: float = 300
    llm_heartbeat_seconds: float = 30
    llm_max_attempts: int = 5
    turns_before_continue_as_new: int = 100


@dataclass
class PendingTurn:
    turn_id: str
    message_id: str


@dataclass
class SessionInput:
    session_id: str
    agent_id: str
    user_id: str
    options: TurnOptions = field(default_factory=TurnOptions)
    # carried over continue-as-new
    pending: list[PendingTurn] = field(default_factory=list)
    recent_turn_ids: list[str] = field(default_factory=list)
    turns_completed: int = 0


@dataclass
class SendMessage:
    turn_id: str
    message_id: str
    double_texting: str = "queue"  # the agent's policy when this message was sent


@dataclass
class GenerateInput:
    session_id: str
    agent_id: str
    turn_id: str
    step: int
    start_turn: bool
    complete_turn: bool


@dataclass
class GenerateResult:
    message_id: str
    usage: dict[str, int]


@dataclass
class ToolCallInput:
    """Run one tool call the model asked for. The arguments stay in the stored assistant
    message (`assistant_message_id`, `tool_call_id`); the result is stored as a `tool` message."""

    session_id: str
    agent_id: str
    user_id: str
    turn_id: str
    step: int
    assistant_message_id: str
    tool_call_id: str
    server_id: str
    tool: str


@dataclass
class ToolCallResult:
    message_id: str
    is_error: bool
    summary: str  # a short, human-readable line for the state query and the Temporal UI


@dataclass
class TurnEvent:
    session_id: str
    turn_id: str
    event: str
    data: dict[str, Any]
    once_key: str


@dataclass
class StepState:
    index: int
    action: str
    status: str = "pending"  # pending | running | completed | error | interrupted
    started_at: str | None = None
    ended_at: str | None = None
    result: str | None = None


@dataclass
class TurnState:
    turn_id: str
    message_id: str
    steps: list[StepState]
    status: str = "running"


@dataclass
class SessionState:
    status: str  # idle | running | closing
    queue_length: int
    turns_completed: int
    active_turn: TurnState | None
