"""Dataclasses shared by the workflows, the activities and the API (the names they go by are
in workflows/names.py).

Ids travel as strings: 64-bit snowflakes do not survive a JavaScript number (Temporal UI).
Payloads hold ids and short results only — bodies live in the message store (claim-check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows.chain import DEFAULT_CHAIN


@dataclass
class TurnOptions:
    """Activity tuning chosen by the API from its config and carried by the session."""

    llm_start_to_close_seconds: float = 300
    llm_heartbeat_seconds: float = 30
    llm_max_attempts: int = 5
    turns_before_continue_as_new: int = 100
    max_tool_rounds: int = 5
    fallback_provider: str | None = None
    fallback_model: str | None = None


@dataclass
class PendingTurn:
    turn_id: str
    message_id: str
    chain: list[Any] = field(default_factory=lambda: list(DEFAULT_CHAIN))


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
    chain: list[Any] = field(default_factory=lambda: list(DEFAULT_CHAIN))  # the agent's template


@dataclass
class HumanReply:
    request_id: str
    message_id: str  # the reply's text is stored as a message first (claim-check)


@dataclass
class CancelTurn:
    turn_id: str | None = None  # None: whatever turn is running
    reason: str = "cancelled"


@dataclass
class StepInput:
    """What every chain-step activity gets: where it is, and its action's parameters."""

    session_id: str
    agent_id: str
    user_id: str
    turn_id: str
    step: int
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    start_turn: bool = False  # first step: emits turn.started
    complete_turn: bool = False  # last step, if it ends with a reply: emits turn.completed
    prior_usage: dict[str, int] = field(default_factory=dict)  # usage of earlier LLM steps
    provider: str | None = None  # failover: use this provider/model instead of the agent's
    model: str | None = None
    failover: bool = False
    allow_tools: bool = True


@dataclass
class ToolCallRef:
    id: str
    name: str
    server_id: str | None  # None: the model named a tool the agent does not have
    tool: str
    policy: str  # allow | approve | deny | unknown


@dataclass
class StepResult:
    summary: str
    message_id: str | None = None  # the reply this step stored, if any
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[ToolCallRef] = field(default_factory=list)
    choice: str | None = None
    turn_completed: bool = False  # the activity already emitted turn.completed
    # AG_RAG: what the step found (document/chunk/offsets or message ids, with scores)
    citations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ToolCallInput:
    """Run one tool call. For a call the model asked for, the arguments stay in the stored
    assistant message (`assistant_message_id`, `tool_call_id`); a chain's own `AG_USE_MCP`
    step passes them inline. The result is stored as a `tool` message."""

    session_id: str
    agent_id: str
    user_id: str
    turn_id: str
    step: int
    assistant_message_id: str
    tool_call_id: str
    server_id: str
    tool: str
    arguments: dict[str, Any] | None = None
    start_turn: bool = False


@dataclass
class ToolCallResult:
    message_id: str
    is_error: bool
    summary: str  # a short, human-readable line for the state query and the Temporal UI


@dataclass
class FinishTurnInput:
    session_id: str
    turn_id: str
    status: str  # completed | failed | cancelled | interrupted | rolled_back
    message_id: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    rollback: bool = False  # delete what the turn stored, as if it never ran


@dataclass
class TurnEvent:
    session_id: str
    turn_id: str
    event: str
    data: dict[str, Any]
    once_key: str


@dataclass
class AgentTaskInput:
    parent_session_id: str
    parent_turn_id: str
    parent_step: int
    agent_id: str  # the agent asked to do the task
    user_id: str
    task: str | None  # None: the parent turn's user message
    options: TurnOptions = field(default_factory=TurnOptions)


@dataclass
class TaskSession:
    session_id: str
    turn_id: str
    message_id: str
    chain: list[Any]
    agent_name: str


@dataclass
class AgentTaskResult:
    session_id: str
    message_id: str | None
    status: str


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
    status: str  # idle | running | waiting_for_human | closing
    queue_length: int
    turns_completed: int
    active_turn: TurnState | None
    pending_human_request: str | None = None
