"""Agent sessions and their turns: the use cases every surface calls (README, "Agent sessions").

A session is a row plus its `AgentSession` workflow (`session-<id>`), the actor that runs its
turns one at a time. Sending is: store the user message once (idempotent on `client_msg_id`),
then offer its turn to the actor through the `send_message` update under the update id
`turn-<turn_id>`, so a resend re-offers the same turn (a no-op if the actor has it) — which also
heals a send whose first attempt stored the message but never reached Temporal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from chatee import session_store, temporal
from chatee.a2a_remote import redact_chain
from chatee.bus import Event, stream_key
from chatee.config import Settings
from chatee.errors import Conflict, NotFound, TooLarge, Unavailable
from chatee.ids import new_id
from chatee.models import Agent, ConversationAgent, Message, Session, Turn
from chatee.redis import REDIS_ERRORS
from chatee.services import Services
from workflows.agent_session import AgentSession
from workflows.chain import DEFAULT_CHAIN
from workflows.events import FINAL, TURN_COMPLETED
from workflows.names import AGENTS_QUEUE, session_workflow_id
from workflows.types import (
    CancelTurn,
    HumanReply,
    SendMessage,
    SessionInput,
    SessionState,
    TurnOptions,
)


@dataclass(frozen=True)
class Accepted:
    """A turn the actor has: its ids, and the stream id to read its events after (`0-0` for
    a resend, whose events may already be out)."""

    turn_id: int
    message_id: int
    after: str


@dataclass(frozen=True)
class Done:
    """A turn that completed: its reply, usage and stored message."""

    content: str
    usage: dict[str, int]
    message_id: str | None


@dataclass(frozen=True)
class Failed:
    type: str
    message: str


def session_closed() -> Conflict:
    return Conflict("the session is closed", "session-closed")


# -- sessions -----------------------------------------------------------------------------------


async def owned_session(db: AsyncSession, user_id: int, session_id: int) -> Session:
    """The caller's session; anyone else's is as missing as one that never existed."""
    session = await session_store.owned_session(db, user_id, session_id)
    if session is None:
        raise NotFound("session not found")
    return session


def turn_options(settings: Settings) -> TurnOptions:
    knobs = settings.temporal
    return TurnOptions(
        llm_start_to_close_seconds=knobs.llm_start_to_close_seconds,
        llm_heartbeat_seconds=knobs.llm_heartbeat_seconds,
        llm_max_attempts=knobs.llm_max_attempts,
        turns_before_continue_as_new=knobs.turns_before_continue_as_new,
        max_tool_rounds=knobs.max_tool_rounds,
        fallback_provider=settings.llm_fallback_provider,
        fallback_model=settings.llm_fallback_model,
    )


async def start_workflow(svc: Services, session: Session, agent: Agent, summary: str) -> None:
    """The one place a session's actor starts, for a direct session or a conversation's."""
    await svc.temporal.start_workflow(
        AgentSession.run,
        SessionInput(
            session_id=str(session.id),
            agent_id=str(agent.id),
            user_id=str(session.user_id),
            options=turn_options(svc.settings),
        ),
        id=session.workflow_id,
        task_queue=AGENTS_QUEUE,
        search_attributes=temporal.session_search_attributes(session.id, agent.id, session.user_id),
        static_summary=f"agent {agent.name} — {summary}",
    )


def new_session(user_id: int, agent: Agent, title: str | None) -> Session:
    session_id = new_id()
    return Session(
        id=session_id,
        user_id=user_id,
        agent_id=agent.id,
        title=title,
        workflow_id=session_workflow_id(session_id),
    )


async def start_session(
    svc: Services, db: AsyncSession, agent: Agent, title: str | None, thread_id: str | None = None
) -> Session:
    """A new session of the caller's `agent` (the caller owns it), with its workflow: no row
    is kept without its workflow. With `thread_id` (a protocol client's conversation id), a
    session the same thread already has makes the flush raise IntegrityError, before any
    workflow starts (chatee/agui_runs.py)."""
    most = svc.settings.security.max_sessions_per_user
    if most and await _open_sessions(db, agent.owner_id) >= most:
        raise Conflict(f"at most {most} open sessions per user; close one", "too-many-sessions")
    session = new_session(agent.owner_id, agent, title)
    session.thread_id = thread_id
    db.add(session)
    await db.flush()
    try:
        await start_workflow(svc, session, agent, f"session {session.id}")
    except RPCError:
        await db.rollback()
        raise Unavailable("Temporal") from None
    await db.commit()
    return session


async def _open_sessions(db: AsyncSession, user_id: int) -> int:
    stmt = select(func.count()).where(Session.user_id == user_id, Session.status != "closed")
    return await db.scalar(stmt) or 0


async def close_session(svc: Services, db: AsyncSession, session: Session) -> Session:
    """Finish queued turns, then end the session's workflow; later sends get a conflict."""
    if session.status != "closed":
        try:
            await _handle(svc, session).signal(AgentSession.close)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable("Temporal") from None
        session.status = "closed"
        await db.commit()
    return session


async def live_state(svc: Services, session: Session) -> SessionState | None:
    """The actor's `state` query, or None while Temporal cannot answer (the stored session is
    still worth showing)."""
    try:
        return await _handle(svc, session).query(
            AgentSession.state, rpc_timeout=timedelta(seconds=3)
        )
    except (RPCError, WorkflowQueryFailedError):
        return None


def _handle(svc: Services, session: Session) -> WorkflowHandle:
    return svc.temporal.get_workflow_handle_for(AgentSession.run, session.workflow_id)


# -- turns --------------------------------------------------------------------------------------


def check_size(svc: Services, content: str) -> None:
    limit = svc.settings.limits.max_message_bytes
    if len(content.encode()) > limit:
        raise TooLarge(f"content is over the {limit}-byte limit", "message-too-large")


async def submit_turn(
    svc: Services, user_id: int, session_id: int, content: str, client_msg_id: str | None
) -> Accepted:
    """Store the user's message and hand its turn to the session's actor."""
    check_size(svc, content)
    async with svc.sessionmaker() as db:
        session = await owned_session(db, user_id, session_id)
        if session.status == "closed":
            raise session_closed()
        agent = await db.get(Agent, session.agent_id)
        if agent is None:
            raise NotFound("agent not found")
    message, after = await store_user_message(svc, session.id, content, client_msg_id)
    try:
        await offer_turn(svc, session, agent, message)
    except (Conflict, Unavailable) as exc:
        # a conflict: definitely refused, the turn will never run. Anything else (Temporal
        # away) without a client_msg_id cannot be healed by a resend: leave nothing
        # half-written — except an unconfirmed turn, which may still run and needs its message.
        if isinstance(exc, Conflict) or (client_msg_id is None and exc.code != UNCONFIRMED):
            await _forget(svc, message)
        raise
    except Exception:
        if client_msg_id is None:  # no way to heal it later: leave nothing half-written
            await _forget(svc, message)
        raise
    return Accepted(message.turn_id, message.id, after)


async def store_user_message(
    svc: Services, session_id: int, content: str, client_msg_id: str | None
) -> tuple[Message, str]:
    """The one path that stores a user's message in a session: once per `client_msg_id`
    (a resend, or a race with one, returns the first). With it, the stream id its turn's
    events follow: the stream's end just before it was stored, or `0-0` for a message stored
    earlier (its events may already be out)."""
    async with svc.sessionmaker() as db:
        if client_msg_id:
            existing = await session_store.message_by_client_id(db, session_id, client_msg_id)
            if existing is not None:
                return existing, "0-0"
        after = await svc.bus.last_id(session_id)
        message = Message(
            id=new_id(),
            session_id=session_id,
            role="user",
            content=content,
            turn_id=new_id(),
            client_msg_id=client_msg_id,
        )
        db.add(message)
        try:
            await db.commit()
        except IntegrityError:
            await db.rollback()
            raced = None
            if client_msg_id:  # the same client_msg_id raced in on another request
                raced = await session_store.message_by_client_id(db, session_id, client_msg_id)
            if raced is None:
                raise Conflict("the message clashed with another; send it again") from None
            return raced, "0-0"
        return message, after


UNCONFIRMED = "turn-unconfirmed"


async def offer_turn(
    svc: Services,
    session: Session,
    agent: Agent,
    message: Message,
    double_texting: str | None = None,
) -> None:
    """Put the message's turn in the actor's mailbox (the `send_message` update), under the
    agent's double-texting policy or `double_texting` (an edited conversation message re-runs
    its turn with `rollback`)."""
    turn_id = str(message.turn_id)
    try:
        # the handler only queues the turn, so the update completes as soon as it is accepted
        await _handle(svc, session).execute_update(
            AgentSession.send_message,
            SendMessage(
                turn_id=turn_id,
                message_id=str(message.id),
                double_texting=double_texting or agent.double_texting,
                # header secrets stay out of the history: the step reads them from the agent
                chain=redact_chain(agent.chain or list(DEFAULT_CHAIN)),
            ),
            id=f"turn-{turn_id}",
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # the worker is too busy to confirm in time; the update may still be accepted later
        raise Unavailable(
            "Temporal",
            "the session did not confirm the turn in time; it may still run — resend with the "
            "same client_msg_id to find out (a resend never starts a second turn)",
            UNCONFIRMED,
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == "SessionBusy":
            raise Conflict(cause.message, "session-busy") from None
        raise session_closed() from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise session_closed() from None
        raise Unavailable("Temporal") from None


async def _forget(svc: Services, message: Message) -> None:
    async with svc.sessionmaker() as db:
        await db.execute(delete(Message).where(Message.id == message.id))
        await db.commit()


async def cancel_turn(svc: Services, session: Session, turn_id: str | None) -> None:
    """Cancel the running turn (or only `turn_id`): its activity stops, `turn.failed` (type
    `cancelled`) follows, no half-stored reply, every tool call keeps a result."""
    try:
        await _handle(svc, session).signal(AgentSession.cancel_turn, CancelTurn(turn_id=turn_id))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise Unavailable("Temporal") from None
        raise session_closed() from None


async def human_reply(svc: Services, session: Session, request_id: str, content: str) -> Message:
    """Answer the running turn's `AG_CALL_HUMAN` step; stored once per request."""
    check_size(svc, content)
    state = await live_state(svc, session)
    if state is None or state.pending_human_request != request_id:
        raise NotFound("no pending human request with that id")
    message = await session_store.store_message_once(
        svc.sessionmaker,
        idempotency_key=f"human:{request_id}",
        session_id=session.id,
        role="user",
        content=content,
        turn_id=int(request_id.split("-")[0]),
    )
    try:
        await _handle(svc, session).signal(
            AgentSession.human_reply, HumanReply(request_id, str(message.id))
        )
    except RPCError:
        raise Unavailable("Temporal") from None
    return message


def turn_ending(event: Event) -> Done | Failed | None:
    """How a turn ended, read off its final event (None for any other event)."""
    if event.event == TURN_COMPLETED:
        usage = event.data.get("usage") or {}
        return Done(event.data.get("content") or "", usage, event.data.get("message_id"))
    if event.event in FINAL:
        error = event.data.get("error") or {}
        return Failed(error.get("type", "failed"), error.get("message", "the turn failed"))
    return None


async def turn_events(
    svc: Services, session_id: int | str, after: str, turn_id: int | str
) -> AsyncIterator[Event]:
    """One turn's events from the session's stream, ending after its final event."""
    async for event in svc.bus.follow(session_id, after):
        if event.data.get("turn_id") != str(turn_id):
            continue
        yield event
        if event.event in FINAL:
            return


# -- deleting -----------------------------------------------------------------------------------


async def delete_session(svc: Services, db: AsyncSession, session: Session) -> None:
    """Stop the session's workflow at once (a running turn ends with it) and delete the
    session, its messages, turns and event stream. A conversation that used it starts a new
    one on its next @mention. Safe to repeat: each part is gone or goes."""
    try:
        await _handle(svc, session).terminate("session deleted")
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it had already ended
            raise Unavailable("Temporal") from None
    try:
        await svc.redis.delete(stream_key(session.id))
    except REDIS_ERRORS:
        raise Unavailable("Redis") from None
    for table in (Message, Turn):
        await db.execute(delete(table).where(table.session_id == session.id))
    await db.execute(delete(ConversationAgent).where(ConversationAgent.session_id == session.id))
    await db.execute(delete(Session).where(Session.id == session.id))
    await db.commit()


async def delete_sessions_of(svc: Services, db: AsyncSession, user_id: int) -> None:
    """Every session of a user (an account being deleted)."""
    sessions = list(await db.scalars(select(Session).where(Session.user_id == user_id)))
    for session in sessions:
        await delete_session(svc, db, session)
