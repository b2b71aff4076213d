"""A2A tasks over agent sessions (README, "A2A").

An A2A task is one Chatee turn (task id = turn id) and its `contextId` is the session the turn
runs in. A message without a context opens a new session of the agent; with one it continues
that session; with a task id it answers that task's pending `AG_CALL_HUMAN` request (the task is
`input-required` until then). Everything here is read back from Chatee's own records — the turn
row, the session's stored messages, the actor's `state` query and the session's event stream —
so any API process answers for any task, before and after a restart. The wire shapes live in
`api/a2a/`; this module sees plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatee import agent_sessions
from chatee.agent_sessions import Done, turn_ending
from chatee.bus import Event
from chatee.errors import Conflict, Invalid, NotFound, Unavailable
from chatee.ids import timestamp_ms
from chatee.models import Agent, Message, Session, Turn
from chatee.services import Services
from workflows.events import HUMAN_REQUEST, MESSAGE_DELTA, STEP_RETRY, TURN_FAILED
from workflows.types import SessionState

TITLE_CHARS = 80
MESSAGE_ID_CHARS = 128  # a message id is kept as the turn's client_msg_id (idempotent resend)
CANCEL_WAIT_SECONDS = 10.0  # how long CancelTask waits to see the turn end
EVENTS_BEFORE_TURN_MS = 60_000  # a turn's events start after its id was drawn (clock slack)
DEFAULT_PROMPT = "The agent needs your input to continue."
SETTLE_TRIES, SETTLE_PAUSE_SECONDS = 20, 0.1  # see _settled

TERMINAL = frozenset({"completed", "failed", "canceled"})
# how a turn that did not complete can end (its status, and its turn.failed error type) when
# someone stopped it: cancel, or a newer message under the `interrupt`/`rollback` policies
STOPPED = frozenset({"cancelled", "interrupted", "rolled_back"})


@dataclass(frozen=True)
class Said:
    """One message of a task's history: `role` is user or agent."""

    message_id: str
    role: str
    text: str


@dataclass(frozen=True)
class TaskView:
    """A task as it stands. `state` uses A2A's names (submitted, working, input-required,
    completed, failed, canceled); `answer` is the reply once completed, `note` the question of
    an input-required task or why it failed."""

    task_id: str
    context_id: str
    state: str
    history: list[Said] = field(default_factory=list)
    answer: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Run:
    """A task the session's actor has — a new turn, or a waiting one that just got its input —
    and the stream position its next events follow."""

    task: TaskView
    session_id: int
    after: str


@dataclass(frozen=True)
class Status:
    """The task moved to `state` (with the question or the reason in `note`)."""

    state: str
    note: str | None = None


@dataclass(frozen=True)
class Answer:
    """The answer so far grew by `text`; with `whole`, `text` is all of it (replace what was
    shown). `last`: the answer is final."""

    text: str
    whole: bool = False
    last: bool = False


def task_not_found(task_id: str) -> NotFound:
    return NotFound(f"task {task_id} not found", "task-not-found")


# -- sending ------------------------------------------------------------------------------------


async def send(
    svc: Services,
    agent: Agent,
    text: str,
    message_id: str,
    context_id: str | None,
    task_id: str | None,
) -> Run:
    """A message to `agent`: it answers task `task_id`, or starts a turn in session
    `context_id`, or in a new session. The message is checked before anything is stored."""
    if not text.strip():
        raise Invalid("the message has no text", "empty-message")
    agent_sessions.check_size(svc, text)
    if len(message_id) > MESSAGE_ID_CHARS:
        raise Invalid(f"messageId is over {MESSAGE_ID_CHARS} characters", "message-id-too-long")
    if task_id:
        return await _answer(svc, agent, task_id, context_id, text, message_id)
    async with svc.sessionmaker() as db:
        if context_id:
            session = await _context(db, agent, context_id)
        else:
            session = await agent_sessions.start_session(svc, db, agent, text[:TITLE_CHARS])
    accepted = await agent_sessions.submit_turn(
        svc, agent.owner_id, session.id, text, message_id or None
    )
    if accepted.after == "0-0":  # a resend: its turn may be long over, its events trimmed
        view = await _view(svc, session, accepted.turn_id)
        if view.state in TERMINAL:
            return Run(view, session.id, accepted.after)
    said = Said(message_id or str(accepted.message_id), "user", text)
    task = TaskView(str(accepted.turn_id), str(session.id), "submitted", [said])
    return Run(task, session.id, accepted.after)


async def _context(db: AsyncSession, agent: Agent, context_id: str) -> Session:
    session = None
    if context_id.isdigit() and len(context_id) <= 19:
        session = await db.get(Session, int(context_id))
    if session is None or session.user_id != agent.owner_id or session.agent_id != agent.id:
        raise NotFound(f"context {context_id} not found for this agent", "context-not-found")
    return session


async def _answer(
    svc: Services,
    agent: Agent,
    task_id: str,
    context_id: str | None,
    text: str,
    message_id: str,
) -> Run:
    """The reply to a task's pending human request: the turn goes on where it waited."""
    session, turn_id = await _task_session(svc, agent, task_id)
    if context_id and context_id != str(session.id):
        raise Invalid(
            f"context {context_id} is not the context of task {task_id}", "context-mismatch"
        )
    state, request = await _settled(svc, session, turn_id)
    if request is None:
        view = await _view(svc, session, turn_id, state)
        if view.state in TERMINAL:
            raise Conflict(
                f"task {task_id} is already {view.state}; send a message without a task id "
                "(same contextId) to start another",
                "task-terminal",
            )
        raise Conflict(f"task {task_id} is {view.state} and needs no input now", "task-not-waiting")
    after = await svc.bus.last_id(session.id)
    await agent_sessions.human_reply(svc, session, request, text)
    task = TaskView(task_id, str(session.id), "working", [Said(message_id, "user", text)])
    return Run(task, session.id, after)


# -- following a run ----------------------------------------------------------------------------


async def progress(svc: Services, run: Run) -> AsyncIterator[Status | Answer]:
    """What a client sees of a run: `working`, the answer as it grows, then how it ended —
    or `input-required` (the run stops there; the answer to it is a new run).

    A retried step (`step.retry`: a worker died, a provider failed over) generates its text
    again. A retry that repeats what was shown adds nothing; one that says something else
    replaces the answer (`whole`); the final answer always matches the stored reply."""
    if run.task.state not in ("submitted", "working"):  # ended, or waits: nothing to follow
        return
    steps: dict[Any, str] = {}  # per step, in order of first text: its current attempt's text
    shown = ""  # the answer as the client has it
    told = False  # has any answer gone out yet
    working = run.task.state == "working"
    task_id = run.task.task_id
    async for event in agent_sessions.turn_events(svc, run.session_id, run.after, task_id):
        if not working and event.event != HUMAN_REQUEST:
            working = True
            yield Status("working")
        if event.event == MESSAGE_DELTA:
            step = event.data.get("step")
            steps[step] = steps.get(step, "") + str(event.data.get("text", ""))
            current = "".join(steps.values())
            if shown.startswith(current):  # nothing beyond what was shown (a repeating retry)
                continue
            piece = _piece(shown, current, told)
            shown, told = current, True
            yield piece
        elif event.event == STEP_RETRY:
            steps[event.data.get("step")] = ""
        elif event.event == HUMAN_REQUEST:
            yield Status("input-required", str(event.data.get("prompt") or DEFAULT_PROMPT))
            return
        else:
            ending = turn_ending(event)
            if isinstance(ending, Done):
                yield replace(_piece(shown, ending.content, told), last=True)
                yield Status("completed")
            elif ending is not None:
                yield Status(_ended(ending.type), ending.message)


def _piece(shown: str, current: str, told: bool) -> Answer:
    """What turns the answer the client has (`shown`) into `current`."""
    if told and current.startswith(shown):
        return Answer(current[len(shown) :])
    return Answer(current, whole=True)


def _ended(status: str) -> str:
    """The task state of a turn that ended with `status` (or a turn.failed of that type)."""
    if status == "completed":
        return "completed"
    return "canceled" if status in STOPPED else "failed"


async def outcome(svc: Services, run: Run) -> TaskView:
    """Wait for the run to end or to need input, then the task as it stands."""
    needs_input = False
    async for change in progress(svc, run):
        needs_input = isinstance(change, Status) and change.state == "input-required"
    async with svc.sessionmaker() as db:
        session = await db.get(Session, run.session_id)
    if session is None:  # deleted meanwhile (with its account)
        raise task_not_found(run.task.task_id)
    turn_id = int(run.task.task_id)
    if needs_input:
        state, _ = await _settled(svc, session, turn_id)
        return await _view(svc, session, turn_id, state)
    return await _view(svc, session, turn_id)


# -- reading and cancelling ---------------------------------------------------------------------


async def find_task(svc: Services, agent: Agent, task_id: str) -> TaskView:
    """The caller's task of `agent`, read from Chatee's records."""
    session, turn_id = await _task_session(svc, agent, task_id)
    return await _view(svc, session, turn_id)


async def resume(svc: Services, agent: Agent, task_id: str) -> Run:
    """A running task to follow again (a client whose stream dropped): its events are replayed
    from the turn's start — or from its last human request, whose reply came after it — so
    the answer is rebuilt whole. A task that has ended or waits for input has nothing to
    follow: the run's task says so."""
    session, turn_id = await _task_session(svc, agent, task_id)
    view = await _view(svc, session, turn_id)
    start = _turn_start(turn_id)
    if view.state in ("submitted", "working"):
        asked = await _turn_event(svc, session.id, turn_id, lambda e: e.event == HUMAN_REQUEST)
        while asked is not None:  # the last one: the turn went on after its reply
            start = asked.id
            asked = await _turn_event(
                svc, session.id, turn_id, lambda e: e.event == HUMAN_REQUEST, after=start
            )
    return Run(view, session.id, start)


async def cancel(svc: Services, agent: Agent, task_id: str) -> TaskView:
    """Cancel a running or input-required task (`cancel_turn`), wait briefly for the turn to
    end, and return the task as it then stands. A finished task cannot be cancelled, nor (as
    the actor only cancels what runs) one still queued behind another turn."""
    session, turn_id = await _task_session(svc, agent, task_id)
    view = await _view(svc, session, turn_id)
    if view.state in TERMINAL:
        raise Conflict(f"task {task_id} is already {view.state}", "task-not-cancelable")
    if view.state == "submitted":
        raise Conflict(
            f"task {task_id} is queued behind another task of its context; it can be canceled "
            "once it runs",
            "task-not-cancelable",
        )
    after = await svc.bus.last_id(session.id)
    if await _recorded(svc, turn_id) is None:  # not ended between the read and `after`
        await agent_sessions.cancel_turn(svc, session, str(turn_id))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT_SECONDS):
                async for _ in agent_sessions.turn_events(svc, session.id, after, turn_id):
                    pass  # ends after the turn's final event
    return await _view(svc, session, turn_id)


async def _task_session(svc: Services, agent: Agent, task_id: str) -> tuple[Session, int]:
    """The session of the caller's task `task_id` of `agent`: a session of theirs, of this
    agent, holding the turn's user message (an indexed probe per session of theirs)."""
    if not task_id.isdigit() or len(task_id) > 19:
        raise task_not_found(task_id)
    turn_id = int(task_id)
    stmt = (
        select(Session)
        .join(Message, Message.session_id == Session.id)
        .where(
            Session.user_id == agent.owner_id,
            Session.agent_id == agent.id,
            Message.turn_id == turn_id,
            Message.role == "user",
        )
        .limit(1)
    )
    async with svc.sessionmaker() as db:
        session = (await db.execute(stmt)).scalar_one_or_none()
    if session is None:
        raise task_not_found(task_id)
    return session, turn_id


async def _recorded(svc: Services, turn_id: int) -> Turn | None:
    async with svc.sessionmaker() as db:
        return await db.get(Turn, turn_id)


async def _settled(
    svc: Services, session: Session, turn_id: int
) -> tuple[SessionState | None, str | None]:
    """The actor's state, and the human request the turn waits for. A request's event goes out
    a moment before the actor notes that it waits, so while the turn runs without one, the
    actor is asked again (briefly): a client answering the event at once is not refused."""
    for _ in range(SETTLE_TRIES):
        state = await agent_sessions.live_state(svc, session)
        request = _pending(state, turn_id)
        if request is not None or not _running(state, turn_id):
            break
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)
    return state, request


def _running(state: SessionState | None, turn_id: int) -> bool:
    return bool(state and state.active_turn and state.active_turn.turn_id == str(turn_id))


def _pending(state: SessionState | None, turn_id: int) -> str | None:
    """The human request the turn waits for, if it is the running turn and waits."""
    return state.pending_human_request if state and _running(state, turn_id) else None


_UNSET: Any = object()


async def _view(
    svc: Services, session: Session, turn_id: int, state: SessionState | None = _UNSET
) -> TaskView:
    """The task of `turn_id`. The actor is asked first, the database second: a turn records
    its ending before it stops running, so a turn the actor no longer runs and that has no
    record is still queued."""
    if state is _UNSET:
        state = await agent_sessions.live_state(svc, session)
    async with svc.sessionmaker() as db:
        turn = await db.get(Turn, turn_id)
        stmt = (
            select(Message)
            .where(Message.session_id == session.id, Message.turn_id == turn_id)
            .order_by(Message.id)
        )
        messages = list((await db.execute(stmt)).scalars())
    history = [
        Said(m.client_msg_id or str(m.id), "user", m.content) for m in messages if m.role == "user"
    ]
    task = TaskView(str(turn_id), str(session.id), "submitted", history)
    if turn is not None:
        ended = _ended(turn.status)
        if ended != "completed":
            return replace(task, state=ended, note=await _why(svc, session.id, turn))
        replies = [m for m in messages if m.role == "assistant" and m.content and not m.tool_calls]
        return replace(task, state=ended, answer=replies[-1].content if replies else "")
    if state is None:
        raise Unavailable("Temporal")
    request = _pending(state, turn_id)
    if request is not None:
        prompt = await _prompt(svc, session.id, turn_id, request)
        return replace(task, state="input-required", note=prompt)
    if _running(state, turn_id):
        return replace(task, state="working")
    return task


async def _prompt(svc: Services, session_id: int, turn_id: int, request_id: str) -> str:
    """The question of a pending human request, read off the turn's events."""
    found = await _turn_event(
        svc,
        session_id,
        turn_id,
        lambda e: e.event == HUMAN_REQUEST and e.data.get("request_id") == request_id,
    )
    return str((found.data.get("prompt") if found else None) or DEFAULT_PROMPT)


async def _why(svc: Services, session_id: int, turn: Turn) -> str:
    """Why a turn did not complete: its `turn.failed` message while the stream still holds it,
    else its recorded error type."""
    found = await _turn_event(svc, session_id, turn.id, lambda e: e.event == TURN_FAILED)
    error = (found.data.get("error") or {}) if found else {}
    return str(error.get("message") or turn.error_type or turn.status)


def _turn_start(turn_id: int) -> str:
    """A stream position a little before the turn's first event (its id is a timestamp)."""
    return f"{max(timestamp_ms(turn_id) - EVENTS_BEFORE_TURN_MS, 0)}-0"


async def _turn_event(
    svc: Services,
    session_id: int,
    turn_id: int,
    wanted: Callable[[Event], bool],
    after: str | None = None,
) -> Event | None:
    """The turn's first event that is `wanted` (after `after`, else from the turn's start),
    read from the session's stream, or None once the stream has no more."""
    after = after or _turn_start(turn_id)
    while events := await svc.bus.read(session_id, after, block_ms=None):
        for event in events:
            if event.data.get("turn_id") == str(turn_id) and wanted(event):
                return event
        after = events[-1].id
    return None
