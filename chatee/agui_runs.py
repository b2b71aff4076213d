"""AG-UI runs over agent sessions (README, "AG-UI").

An AG-UI client keeps a thread and sends all of it with every run; Chatee keeps the conversation
itself, in one durable session per (user, agent, thread). So a run is the thread's session
(started on first use) and one of two things: the run's new trailing user message, run as a
turn — stored once, however often the thread repeats it — or the answer to the interrupt (an
`AG_CALL_HUMAN` step waiting for a person) that ended the run before; either way the run then
follows that turn's events. The wire shapes live in `api/agui/`; this module sees plain values.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatee import agent_sessions
from chatee.agents import owned_agent
from chatee.bus import Event
from chatee.errors import Conflict, Invalid
from chatee.models import Agent, Message, Session, Turn
from chatee.services import Services
from workflows.events import HUMAN_REQUEST, TURN_COMPLETED, TURN_FAILED

TITLE_CHARS = 80
MAX_THREAD_ID = 191  # sessions.thread_id
CLIENT_ID_PREFIX = "agui:"
MAX_CLIENT_ID = 128  # messages.client_msg_id


@dataclass(frozen=True)
class Said:
    """One message of the run's thread: `text` is None when it is not plain text."""

    id: str
    role: str
    text: str | None


@dataclass(frozen=True)
class Answer:
    """A resume entry: the answer to interrupt `interrupt_id`, or (not `resolved`) giving up."""

    interrupt_id: str
    resolved: bool
    text: str


@dataclass(frozen=True)
class Run:
    """A run's turn: the session it runs in, and where in the session's stream its events
    follow. `ended`: the turn's ending rebuilt from the store, for a run that repeats a turn
    long finished (its events may be gone from the stream)."""

    session_id: int
    turn_id: int
    after: str
    ended: Event | None = None


def client_msg_id(message_id: str) -> str:
    """The turn's idempotency key from the AG-UI message id: the thread repeats the message
    on every run, and it is stored once."""
    key = CLIENT_ID_PREFIX + message_id
    if len(key) > MAX_CLIENT_ID:
        key = CLIENT_ID_PREFIX + "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()
    return key


# -- the thread's session -------------------------------------------------------------------------


async def _thread_session(
    db: AsyncSession, owner_id: int, agent_id: int, thread_id: str
) -> Session | None:
    stmt = select(Session).where(
        Session.user_id == owner_id, Session.agent_id == agent_id, Session.thread_id == thread_id
    )
    return (await db.execute(stmt)).scalar_one_or_none()


async def thread_session(
    svc: Services, db: AsyncSession, agent: Agent, thread_id: str, title: str | None
) -> Session:
    """The thread's session, started on first use. Two first runs racing on one thread: the
    unique (user, agent, thread) index lets one insert; the other waits for it, then finds its
    session, whose workflow the winner started before committing."""
    owner_id, agent_id = agent.owner_id, agent.id  # a rollback expires `agent`
    found = await _thread_session(db, owner_id, agent_id, thread_id)
    if found is not None:
        return found
    try:
        return await agent_sessions.start_session(svc, db, agent, title, thread_id=thread_id)
    except IntegrityError:
        await db.rollback()
    found = await _thread_session(db, owner_id, agent_id, thread_id)
    if found is None:  # the winner failed to start its workflow and rolled back
        raise Conflict("the thread's session could not be started; run again", "thread-busy")
    return found


# -- starting a run -------------------------------------------------------------------------------


async def start(
    svc: Services,
    user_id: int,
    agent_id: str,
    thread_id: str,
    messages: Sequence[Said],
    answers: Sequence[Answer],
) -> Run:
    """The run's turn: the interrupted one its `answers` resume, else its trailing user
    message's (a new turn, or the same one again when the thread repeats it)."""
    if not thread_id or len(thread_id) > MAX_THREAD_ID:
        raise Invalid(f"threadId must be 1 to {MAX_THREAD_ID} characters", param="threadId")
    async with svc.sessionmaker() as db:
        agent = await owned_agent(db, user_id, agent_id)
        if answers:
            session = await _thread_session(db, agent.owner_id, agent.id, thread_id)
            if session is None:
                raise Conflict("nothing on this thread is waiting for an answer", "not-interrupted")
            return await resume(svc, session, answers)
        text, message_id = trailing_text(messages)
        agent_sessions.check_size(svc, text)
        session = await thread_session(svc, db, agent, thread_id, text[:TITLE_CHARS] or None)
    accepted = await agent_sessions.submit_turn(
        svc, user_id, session.id, text, client_msg_id(message_id)
    )
    ended = None
    if accepted.after == "0-0":  # the thread repeated a message already sent
        ended = await stored_ending(svc, session.id, accepted.turn_id)
    return Run(session.id, accepted.turn_id, accepted.after, ended)


def trailing_text(messages: Sequence[Said]) -> tuple[str, str]:
    """The run's new user message: the thread's last message, which must be a user's text."""
    if not messages or messages[-1].role != "user":
        raise Invalid(
            "the last message must be a user message (or send `resume` to answer an interrupt)",
            param="messages",
        )
    last = messages[-1]
    if last.text is None:
        raise Invalid("only text content is supported in the user message", param="messages")
    if not last.text.strip():
        raise Invalid("the user message is empty", param="messages")
    return last.text, last.id


async def resume(svc: Services, session: Session, answers: Sequence[Answer]) -> Run:
    """Answer (or give up) the interrupt that ended the thread's last run, and follow the rest
    of its turn: from the stream's end now, since the turn did nothing while it waited."""
    if len(answers) != 1:
        raise Invalid("resume answers one interrupt at a time", param="resume")
    answer = answers[0]
    state = await agent_sessions.live_state(svc, session)
    if state is None or state.pending_human_request != answer.interrupt_id:
        raise Conflict(
            f"interrupt {answer.interrupt_id!r} is not waiting for an answer on this thread",
            "interrupt-not-pending",
        )
    turn_id = int(answer.interrupt_id.split("-")[0])
    after = await svc.bus.last_id(session.id)
    if answer.resolved:
        await agent_sessions.human_reply(svc, session, answer.interrupt_id, answer.text)
    else:
        await agent_sessions.cancel_turn(svc, session, str(turn_id))
    return Run(session.id, turn_id, after)


# -- following it ---------------------------------------------------------------------------------


async def events(svc: Services, run: Run) -> AsyncIterator[Event]:
    """The run's turn's events, ending after its final one. A `human.request` already answered
    (a run repeating a turn that went on since) is left out."""
    if run.ended is not None:
        yield run.ended
        return
    async for event in agent_sessions.turn_events(svc, run.session_id, run.after, run.turn_id):
        if event.event == HUMAN_REQUEST and await _answered(svc, event.data["request_id"]):
            continue
        yield event


async def _answered(svc: Services, request_id: str) -> bool:
    async with svc.sessionmaker() as db:
        stmt = select(Message.id).where(Message.idempotency_key == f"human:{request_id}")
        return (await db.execute(stmt.limit(1))).first() is not None


async def stored_ending(svc: Services, session_id: int, turn_id: int) -> Event | None:
    """A finished turn's final event, rebuilt from what was stored (None while it runs)."""
    async with svc.sessionmaker() as db:
        turn = await db.get(Turn, turn_id)
        if turn is None:
            return None
        stmt = (
            select(Message)
            .where(
                Message.session_id == session_id,
                Message.turn_id == turn_id,
                Message.role == "assistant",
            )
            .order_by(Message.id)
        )
        replies = [m for m in (await db.execute(stmt)).scalars() if not m.tool_calls]
    data: dict[str, Any] = {"turn_id": str(turn_id)}
    if turn.status == "completed":
        reply = replies[-1] if replies else None
        data |= {
            "message_id": str(reply.id) if reply else None,
            "content": reply.content if reply else "",
            "usage": turn.usage or {},
        }
        return Event("", TURN_COMPLETED, data)
    kind = turn.error_type or turn.status
    error = {"type": kind, "message": f"the turn ended: {kind}"}
    return Event("", TURN_FAILED, {**data, "error": error})


async def state(svc: Services, session_id: int) -> dict[str, Any]:
    """The session's live state (the actor's `state` query) as shared state for the client;
    just the session while Temporal cannot answer."""
    async with svc.sessionmaker() as db:
        session = await db.get(Session, session_id)
    assert session is not None
    live = await agent_sessions.live_state(svc, session)
    found: dict[str, Any] = asdict(live) if live else {"status": session.status}
    return {"session_id": str(session.id), **found}
