"""Agent sessions: each one is an `AgentSession` workflow (`session-<id>`)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import DB, Caller, Res, UserId, parse_id
from api.errors import Problem, not_found, unavailable
from api.routers.agents import owned_agent_or_404
from api.schemas import (
    CancelIn,
    HumanReplyIn,
    SessionIn,
    SessionOut,
    SessionStateOut,
)
from api.schemas_rag import CitedMessageOut, CitedMessagePage
from api.sse import event_source
from chatee import store, temporal
from chatee.bus import is_stream_id
from chatee.config import Settings
from chatee.ids import new_id
from chatee.models import Session
from workflows.types import (
    AGENTS_QUEUE,
    CancelTurn,
    HumanReply,
    SessionInput,
    SessionState,
    TurnOptions,
    session_workflow_id,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])


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


def session_out(session: Session, state: SessionState | None = None) -> SessionOut:
    return SessionOut(
        id=str(session.id),
        agent_id=str(session.agent_id),
        title=session.title,
        workflow_id=session.workflow_id,
        status=session.status,
        created_at=session.created_at,
        state=SessionStateOut.model_validate(asdict(state)) if state else None,
    )


async def owned_session_or_404(db: AsyncSession, user_id: int, raw_id: str) -> Session:
    session = await store.owned_session(db, user_id, parse_id(raw_id, "session"))
    if session is None:
        raise not_found("session")
    return session


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_session(body: SessionIn, user_id: UserId, db: DB, res: Res) -> SessionOut:
    agent = await owned_agent_or_404(db, user_id, body.agent_id)
    most = res.settings.security.max_sessions_per_user
    if most and await _open_sessions(db, user_id) >= most:
        raise Problem(
            409, f"at most {most} open sessions per user; close one", "/problems/too-many-sessions"
        )
    session_id = new_id()
    session = Session(
        id=session_id,
        user_id=user_id,
        agent_id=agent.id,
        title=body.title,
        workflow_id=session_workflow_id(session_id),
    )
    db.add(session)
    await db.flush()
    try:
        await res.temporal.start_workflow(
            "AgentSession",
            SessionInput(
                session_id=str(session_id),
                agent_id=str(agent.id),
                user_id=str(user_id),
                options=turn_options(res.settings),
            ),
            id=session.workflow_id,
            task_queue=AGENTS_QUEUE,
            search_attributes=temporal.session_search_attributes(session_id, agent.id, user_id),
            static_summary=f"agent {agent.name} — session {session_id}",
        )
    except RPCError:
        await db.rollback()  # no session row without its workflow
        raise unavailable("Temporal") from None
    await db.commit()
    return session_out(session)


async def _open_sessions(db: AsyncSession, user_id: int) -> int:
    stmt = select(func.count()).where(Session.user_id == user_id, Session.status != "closed")
    return await db.scalar(stmt) or 0


@router.get("")
async def list_sessions(
    user_id: UserId, db: DB, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[SessionOut]:
    stmt = (
        select(Session).where(Session.user_id == user_id).order_by(Session.id.desc()).limit(limit)
    )
    return [session_out(s) for s in (await db.execute(stmt)).scalars()]


@router.get("/{session_id}")
async def get_session(session_id: str, user_id: UserId, db: DB, res: Res) -> SessionOut:
    session = await owned_session_or_404(db, user_id, session_id)
    # without live state (Temporal unreachable) the stored session is still worth returning
    return session_out(session, await live_state(res, session))


@router.post("/{session_id}/close", status_code=status.HTTP_202_ACCEPTED)
async def close_session(session_id: str, user_id: UserId, db: DB, res: Res) -> SessionOut:
    """Finish queued turns, then end the session's workflow; later sends get 409."""
    session = await owned_session_or_404(db, user_id, session_id)
    if session.status != "closed":
        try:
            await res.temporal.get_workflow_handle(session.workflow_id).signal("close")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise unavailable("Temporal") from None
        session.status = "closed"
        await db.commit()
    return session_out(session)


async def live_state(res: Res, session: Session) -> SessionState | None:
    try:
        return await res.temporal.get_workflow_handle(session.workflow_id).query(
            "state", result_type=SessionState, rpc_timeout=timedelta(seconds=3)
        )
    except (RPCError, WorkflowQueryFailedError):
        return None


@router.post("/{session_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_turn(
    session_id: str, user_id: UserId, db: DB, res: Res, body: CancelIn | None = None
) -> SessionOut:
    """Cancel the running turn: its activity stops, `turn.failed` (type `cancelled`) follows,
    no half-stored reply, every tool call keeps a result. Queued turns still run."""
    session = await owned_session_or_404(db, user_id, session_id)
    request = CancelTurn(turn_id=body.turn_id if body else None)
    try:
        await res.temporal.get_workflow_handle(session.workflow_id).signal("cancel_turn", request)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise unavailable("Temporal") from None
        raise Problem(409, "the session is closed", "/problems/session-closed") from None
    return session_out(session, await live_state(res, session))


@router.post("/{session_id}/human-reply", status_code=status.HTTP_202_ACCEPTED)
async def human_reply(
    session_id: str, body: HumanReplyIn, user_id: UserId, db: DB, res: Res
) -> dict[str, str]:
    """Answer an `AG_CALL_HUMAN` step (`human.request` event) of the running turn."""
    session = await owned_session_or_404(db, user_id, session_id)
    limit = res.settings.limits.max_message_bytes
    if len(body.content.encode()) > limit:
        raise Problem(413, f"content is over the {limit}-byte limit", "/problems/message-too-large")
    state = await live_state(res, session)
    if state is None or state.pending_human_request != body.request_id:
        raise Problem(404, "no pending human request with that id", "/problems/not-found")
    turn_id = int(body.request_id.split("-")[0])
    message = await store.store_message_once(
        res.db,
        idempotency_key=f"human:{body.request_id}",
        session_id=session.id,
        role="user",
        content=body.content,
        turn_id=turn_id,
    )
    try:
        await res.temporal.get_workflow_handle(session.workflow_id).signal(
            "human_reply", HumanReply(body.request_id, str(message.id))
        )
    except RPCError:
        raise unavailable("Temporal") from None
    return {"request_id": body.request_id, "message_id": str(message.id)}


@router.get("/{session_id}/messages")
async def list_messages(
    session_id: str,
    user_id: UserId,
    db: DB,
    before: Annotated[str | None, Query(description="message id; returns older ones")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CitedMessagePage:
    """Newest first; pass `next_before` back as `before` for the previous page."""
    session = await owned_session_or_404(db, user_id, session_id)
    cursor = parse_before(before)
    rows = await store.message_page(db, session.id, cursor, limit)
    items = [
        CitedMessageOut(
            id=str(m.id),
            role=m.role,
            content=m.content,
            turn_id=str(m.turn_id),
            created_at=m.created_at,
            usage=m.usage,
            citations=m.citations,
        )
        for m in rows
    ]
    return CitedMessagePage(items=items, next_before=items[-1].id if len(items) == limit else None)


def parse_before(before: str | None) -> int | None:
    if before is None:
        return None
    if not before.isdigit() or len(before) > 20:
        raise Problem(400, "before must be a message id", "/problems/bad-cursor")
    return int(before)


@router.get(
    "/{session_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def session_events(
    session_id: str,
    caller: Caller,
    db: DB,
    res: Res,
    after: Annotated[
        str | None, Query(description="stream id to resume after; 0 replays all")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """SSE of the session's events. `id:` is the Redis stream id; reconnect with
    `Last-Event-ID` (or `?after=`) to resume. Without either, only new events are sent."""
    session = await owned_session_or_404(db, caller.user_id, session_id)
    cursor = last_event_id or after
    if cursor is not None and not is_stream_id(cursor):
        raise Problem(
            400,
            "Last-Event-ID / after must be a stream id like 1700000000000-0",
            "/problems/bad-cursor",
        )
    if cursor is None:
        cursor = await res.bus.last_id(session.id)
    await db.close()  # do not hold a pooled connection for the life of the stream
    return event_source(res.bus.follow(session.id, cursor), res, caller)
