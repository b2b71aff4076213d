"""A turn's Chatee events as one AG-UI run (README, "AG-UI"), built from `ag_ui.core` models.

| Chatee event | AG-UI events |
|---|---|
| (the run opens) | RUN_STARTED, STATE_SNAPSHOT (the session's live state) |
| step.started / step.completed | STEP_STARTED / STEP_FINISHED, named `<action>#<step>` |
| message.delta | TEXT_MESSAGE_START (a step's first piece), _CONTENT; _END with its step |
| tool.call / tool.result | TOOL_CALL_START, TOOL_CALL_ARGS, TOOL_CALL_END / TOOL_CALL_RESULT |
| step.retry | the step's partial message ends and a MESSAGES_SNAPSHOT without it follows |
| human.request | RUN_FINISHED, `interrupt` outcome (answered by the next run's `resume`) |
| turn.completed | RUN_FINISHED (result: session, turn, message, reply; usage) |
| turn.failed | RUN_ERROR; a cancelled turn: RUN_FINISHED with a `cancelled` outcome |

Everything opened is closed before the run finishes, as AG-UI clients verify.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from ag_ui.core import (
    PROTOCOL_VERSION,
    AssistantMessage,
    BaseEvent,
    FunctionCall,
    Interrupt,
    Message,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCall,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
)

from chatee.bus import Event
from chatee.openai_sessions import usage_counts
from chatee.timefmt import rfc3339_ms
from workflows.events import (
    HUMAN_REQUEST,
    MESSAGE_DELTA,
    STEP_COMPLETED,
    STEP_RETRY,
    STEP_STARTED,
    TOOL_CALL,
    TOOL_RESULT,
    TURN_COMPLETED,
    TURN_FAILED,
)

ENDINGS = frozenset({TURN_COMPLETED, TURN_FAILED, HUMAN_REQUEST})
INTERRUPT_REASON = "human_input"  # an AG_CALL_HUMAN step (a question, or a tool approval)


class RunRenderer:
    """One run: what it has opened (steps, text messages, tool calls), and the messages the
    client holds — its thread plus what this run added — for a MESSAGES_SNAPSHOT."""

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        thread: Sequence[Message],
        session_id: int,
        turn_id: int,
        state: Callable[[], Awaitable[Any]],
    ) -> None:
        self.thread_id, self.run_id = thread_id, run_id
        self.session_id, self.turn_id = str(session_id), str(turn_id)
        self.state = state
        self.messages: list[Any] = list(thread)
        self.steps: dict[Any, str] = {}  # open steps: step -> name
        self.texts: dict[Any, str] = {}  # open text messages: step -> message id
        self.retries: dict[Any, int] = {}  # step -> times it was retried
        self.calls: set[str] = set()
        self.last_text: str | None = None  # the latest text message's id

    async def run(self, source: AsyncIterator[Event]) -> AsyncIterator[BaseEvent]:
        yield self._out(
            RunStartedEvent(
                thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION
            )
        )
        yield self._out(StateSnapshotEvent(snapshot=await self.state()))
        handlers: dict[str, Callable[[dict[str, Any]], Iterator[BaseEvent]]] = {
            STEP_STARTED: self._step_started,
            MESSAGE_DELTA: self._text,
            STEP_RETRY: self._retry,
            TOOL_CALL: self._tool_call,
            TOOL_RESULT: self._tool_result,
            STEP_COMPLETED: self._step_completed,
        }
        async for event in source:
            if event.event in handlers:
                for out in handlers[event.event](event.data):
                    yield self._out(out)
            elif event.event in ENDINGS:
                for out in self._close():
                    yield self._out(out)
                if event.event == TURN_COMPLETED:
                    for out in self._reply(event.data.get("content") or ""):
                        yield self._out(out)
                yield self._out(StateSnapshotEvent(snapshot=await self.state()))
                yield self._out(self._finish(event))
                return
        for out in self._close():
            yield self._out(out)
        yield self._out(RunErrorEvent(message="the turn's events ended early", code="incomplete"))

    # -- one Chatee event each ----------------------------------------------------------------

    def _step_started(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        step = data.get("step")
        if step not in self.steps:
            self.steps[step] = f"{data.get('action')}#{step}"
            yield StepStartedEvent(step_name=self.steps[step])

    def _step_completed(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        step = data.get("step")
        yield from self._end_text(step)
        if step in self.steps:  # a step started before this run (a resumed one) is not shown
            yield StepFinishedEvent(step_name=self.steps.pop(step))

    def _text(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        step = data.get("step")
        message_id = self.texts.get(step)
        if message_id is None:
            attempt = self.retries.get(step, 0)
            message_id = f"{self.turn_id}-{step}" + (f"-{attempt}" if attempt else "")
            self.texts[step] = self.last_text = message_id
            yield TextMessageStartEvent(message_id=message_id, role="assistant")
        yield TextMessageContentEvent(message_id=message_id, delta=data["text"])

    def _retry(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        """The step runs again from the start. AG-UI cannot take streamed text back, so the
        partial message ends and a snapshot of the messages without it replaces the client's;
        the new attempt streams into a message of its own."""
        step = data.get("step")
        self.retries[step] = self.retries.get(step, 0) + 1
        partial = self.texts.get(step)
        if partial is None:
            return
        yield from self._end_text(step)
        self.messages = [m for m in self.messages if m.id != partial]
        yield MessagesSnapshotEvent(messages=self.messages)

    def _tool_call(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        call_id = data["tool_call_id"]
        if call_id in self.calls:
            return
        self.calls.add(call_id)
        last = self.messages[-1] if self.messages else None
        parent = self.last_text if last is not None and last.id == self.last_text else None
        yield ToolCallStartEvent(
            tool_call_id=call_id,
            tool_call_name=data.get("name") or "tool",
            parent_message_id=parent or f"{self.turn_id}-{data.get('step')}-calls",
        )
        arguments = data.get("arguments")
        if arguments is not None:
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            yield ToolCallArgsEvent(tool_call_id=call_id, delta=text)
        yield ToolCallEndEvent(tool_call_id=call_id)

    def _tool_result(self, data: dict[str, Any]) -> Iterator[BaseEvent]:
        call_id = data["tool_call_id"]
        yield from self._tool_call({**data, "arguments": None})  # a refused call has no start
        yield ToolCallResultEvent(
            message_id=data.get("message_id") or f"{call_id}-result",
            tool_call_id=call_id,
            content=result_text(data.get("content") or []),
            role="tool",
        )

    # -- ending -------------------------------------------------------------------------------

    def _end_text(self, step: Any) -> Iterator[BaseEvent]:
        message_id = self.texts.pop(step, None)
        if message_id is not None:
            yield TextMessageEndEvent(message_id=message_id)

    def _close(self) -> Iterator[BaseEvent]:
        for step in list(self.texts):
            yield from self._end_text(step)
        for name in self.steps.values():
            yield StepFinishedEvent(step_name=name)
        self.steps.clear()

    def _reply(self, content: str) -> Iterator[BaseEvent]:
        """The reply as a message of its own when this run did not stream it (a fixed reply, a
        turn finished before this run, a resumed turn's reply that streamed before)."""
        streamed = next((m for m in self.messages if m.id == self.last_text), None)
        if not content or (streamed is not None and streamed.content == content):
            return
        message_id = f"{self.turn_id}-reply"
        yield TextMessageStartEvent(message_id=message_id, role="assistant")
        yield TextMessageContentEvent(message_id=message_id, delta=content)
        yield TextMessageEndEvent(message_id=message_id)

    def _finish(self, event: Event) -> BaseEvent:
        data = event.data
        result = {"sessionId": self.session_id, "turnId": self.turn_id}
        if event.event == HUMAN_REQUEST:
            return RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result=result,
                outcome=RunFinishedInterruptOutcome(interrupts=[interrupt(event, self.session_id)]),
            )
        if event.event == TURN_COMPLETED:
            return RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result={
                    **result,
                    "messageId": data.get("message_id"),
                    "content": data.get("content") or "",
                },
                usage=token_usage(data.get("usage") or {}),
            )
        error = data.get("error") or {}
        if error.get("type") == "cancelled":
            return RunFinishedEvent(
                thread_id=self.thread_id,
                run_id=self.run_id,
                result=result,
                outcome=RunFinishedCancelledOutcome(),
            )
        return RunErrorEvent(
            message=error.get("message") or "the turn failed", code=error.get("type") or "failed"
        )

    # -- the client's messages ----------------------------------------------------------------

    def _out(self, event: BaseEvent) -> BaseEvent:
        """Stamp the event, and apply it to the messages as an AG-UI client does."""
        event.timestamp = int(time.time() * 1000)
        if isinstance(event, TextMessageStartEvent):
            self.messages.append(AssistantMessage(id=event.message_id, content=""))
        elif isinstance(event, TextMessageContentEvent):
            message = next(m for m in self.messages if m.id == event.message_id)
            message.content += event.delta
        elif isinstance(event, ToolCallStartEvent):
            call = ToolCall(
                id=event.tool_call_id,
                function=FunctionCall(name=event.tool_call_name, arguments=""),
            )
            last = self.messages[-1] if self.messages else None
            if isinstance(last, AssistantMessage) and last.id == event.parent_message_id:
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                self.messages.append(
                    AssistantMessage(id=event.parent_message_id or call.id, tool_calls=[call])
                )
        elif isinstance(event, ToolCallArgsEvent):
            for message in self.messages:
                for call in getattr(message, "tool_calls", None) or []:
                    if call.id == event.tool_call_id:
                        call.function.arguments += event.delta
        elif isinstance(event, ToolCallResultEvent):
            self.messages.append(
                ToolMessage(
                    id=event.message_id, tool_call_id=event.tool_call_id, content=event.content
                )
            )
        return event


def interrupt(event: Event, session_id: str) -> Interrupt:
    """A `human.request` as an AG-UI interrupt: its id is the request id, which the next run's
    `resume` entry (or `POST /sessions/{id}/human-reply`) answers."""
    data = event.data
    expires = None
    seconds = data.get("timeout_seconds")
    if event.id and seconds is not None:  # a stream id starts with its time in milliseconds
        expires = rfc3339_ms(int(event.id.split("-")[0]) + int(float(seconds) * 1000))
    return Interrupt(
        id=data["request_id"],
        reason=INTERRUPT_REASON,
        message=data.get("prompt"),
        expires_at=expires,
        response_schema={"type": "string", "description": "your answer, as text"},
        metadata={"sessionId": session_id, "turnId": data.get("turn_id"), "step": data.get("step")},
    )


def result_text(content: list[dict[str, Any]]) -> str:
    """An MCP result's content blocks as text: text blocks as they are, others as JSON."""
    parts = [
        str(block.get("text", "")) if block.get("type") == "text" else json.dumps(block)
        for block in content
    ]
    return "\n".join(parts)


def token_usage(usage: dict[str, Any]) -> list[TokenUsage] | None:
    if not usage:
        return None
    prompt, completion = usage_counts(usage)
    return [
        TokenUsage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
    ]
