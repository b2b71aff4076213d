"""A turn's events (the session's event stream: SSE `event:` names from workflows/events.py)
as typed values. Every one keeps its stream `id` (resume cursor) and raw `data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workflows import events as names


@dataclass(frozen=True)
class TurnEvent:
    """Any event; the subclasses below name the fields of the known ones."""

    id: str
    event: str
    data: dict[str, Any] = field(repr=False)

    @property
    def turn_id(self) -> str:
        return str(self.data.get("turn_id", ""))

    @property
    def session_id(self) -> str:
        return str(self.data.get("session_id", ""))

    @property
    def step(self) -> int | None:
        return self.data.get("step")


@dataclass(frozen=True)
class TurnStarted(TurnEvent):
    pass


@dataclass(frozen=True)
class StepStarted(TurnEvent):
    @property
    def action(self) -> str:
        return str(self.data.get("action", ""))


@dataclass(frozen=True)
class MessageDelta(TurnEvent):
    @property
    def text(self) -> str:
        return str(self.data.get("text", ""))


@dataclass(frozen=True)
class ToolCall(TurnEvent):
    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    @property
    def arguments(self) -> Any:
        return self.data.get("arguments")


@dataclass(frozen=True)
class ToolResult(TurnEvent):
    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    @property
    def is_error(self) -> bool:
        return bool(self.data.get("is_error"))

    @property
    def content(self) -> list[Any]:
        return list(self.data.get("content") or [])


@dataclass(frozen=True)
class StepCompleted(TurnEvent):
    @property
    def action(self) -> str:
        return str(self.data.get("action", ""))

    @property
    def result(self) -> str | None:
        return self.data.get("result")

    @property
    def citations(self) -> list[dict[str, Any]]:
        """An `AG_RAG` step's passages: document, chunk, offsets, score."""
        return list(self.data.get("citations") or [])

    @property
    def choice(self) -> str | None:
        """An `AG_SELF_DECIDE` step's chosen option."""
        return self.data.get("choice")


@dataclass(frozen=True)
class StepRetry(TurnEvent):
    """The step runs again: `dropped` is the partial text of it the SDK threw away
    (`TurnStream.text` no longer has it; a UI should erase it too)."""

    dropped: str = ""

    @property
    def attempt(self) -> int | None:
        return self.data.get("attempt")

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", "retry"))


@dataclass(frozen=True)
class HumanRequest(TurnEvent):
    """The turn waits for `Client.human_reply(session_id, request_id, answer)`."""

    @property
    def request_id(self) -> str:
        return str(self.data.get("request_id", ""))

    @property
    def prompt(self) -> str:
        return str(self.data.get("prompt", ""))


@dataclass(frozen=True)
class TurnCompleted(TurnEvent):
    @property
    def message_id(self) -> str | None:
        return self.data.get("message_id")

    @property
    def content(self) -> str:
        return str(self.data.get("content") or "")

    @property
    def usage(self) -> dict[str, Any]:
        return dict(self.data.get("usage") or {})


@dataclass(frozen=True)
class TurnFailed(TurnEvent):
    @property
    def error_type(self) -> str:
        return str((self.data.get("error") or {}).get("type", ""))

    @property
    def error_message(self) -> str:
        return str((self.data.get("error") or {}).get("message", ""))


KINDS: dict[str, type[TurnEvent]] = {
    names.TURN_STARTED: TurnStarted,
    names.STEP_STARTED: StepStarted,
    names.MESSAGE_DELTA: MessageDelta,
    names.TOOL_CALL: ToolCall,
    names.TOOL_RESULT: ToolResult,
    names.STEP_COMPLETED: StepCompleted,
    names.STEP_RETRY: StepRetry,
    names.HUMAN_REQUEST: HumanRequest,
    names.TURN_COMPLETED: TurnCompleted,
    names.TURN_FAILED: TurnFailed,
}
FINAL = names.FINAL


def parse_event(event_id: str, name: str, data: dict[str, Any]) -> TurnEvent:
    return KINDS.get(name, TurnEvent)(event_id, name, data)


def stream_key(event_id: str) -> tuple[int, int]:
    """A Redis stream id (`<ms>-<seq>`) as a sortable pair."""
    ms, _, seq = event_id.partition("-")
    return int(ms or 0), int(seq or 0)
