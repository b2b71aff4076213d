"""Agent sessions: each one is an `AgentSession` workflow (`session-<id>`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from api.deps import DB, Caller, ReadDB, Svc, UserId, parse_id
from api.schemas import (
    CancelIn,
    HumanReplyIn,
    SessionIn,
    SessionOut,
    SessionStateOut,
    ToolCallOut,
)
from api.schemas_rag import CitedMessageOut, CitedMessagePage
from api.sse import event_source
from chatee import agent_sessions, session_store
from chatee.agents import owned_agent
from chatee.bus import is_stream_id
from chatee.errors import ChateeError
from chatee.models import Session
from workflows.types import (
    SessionState,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])


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


async def owned(db: AsyncSession, user_id: int, raw_id: str) -> Session:
    return await agent_sessions.owned_session(db, user_id, parse_id(raw_id, "session"))


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_session(body: SessionIn, user_id: UserId, db: DB, svc: Svc) -> SessionOut:
    agent = await owned_agent(db, user_id, body.agent_id)
    return session_out(await agent_sessions.start_session(svc, db, agent, body.title))


@router.get("")
async def list_sessions(
    user_id: UserId, db: ReadDB, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[SessionOut]:
    stmt = (
        select(Session).where(Session.user_id == user_id).order_by(Session.id.desc()).limit(limit)
    )
    return [session_out(s) for s in (await db.execute(stmt)).scalars()]


@router.get("/{session_id}")
async def get_session(session_id: str, user_id: UserId, db: DB, svc: Svc) -> SessionOut:
    session = await owned(db, user_id, session_id)
    return session_out(session, await agent_sessions.live_state(svc, session))


@router.post("/{session_id}/close", status_code=status.HTTP_202_ACCEPTED)
async def close_session(session_id: str, user_id: UserId, db: DB, svc: Svc) -> SessionOut:
    """Finish queued turns, then end the session's workflow; later sends get 409."""
    session = await owned(db, user_id, session_id)
    return session_out(await agent_sessions.close_session(svc, db, session))


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: str, user_id: UserId, db: DB, svc: Svc) -> Response:
    """Stop the session's workflow at once (a running turn ends with it) and delete the
    session with its messages."""
    session = await owned(db, user_id, session_id)
    await agent_sessions.delete_session(svc, db, session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{session_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_turn(
    session_id: str, user_id: UserId, db: DB, svc: Svc, body: CancelIn | None = None
) -> SessionOut:
    """Cancel the running turn: its activity stops, `turn.failed` (type `cancelled`) follows,
    no half-stored reply, every tool call keeps a result. Queued turns still run."""
    session = await owned(db, user_id, session_id)
    await agent_sessions.cancel_turn(svc, session, body.turn_id if body else None)
    return session_out(session, await agent_sessions.live_state(svc, session))


@router.post("/{session_id}/human-reply", status_code=status.HTTP_202_ACCEPTED)
async def human_reply(
    session_id: str, body: HumanReplyIn, user_id: UserId, db: DB, svc: Svc
) -> dict[str, str]:
    """Answer an `AG_CALL_HUMAN` step (`human.request` event) of the running turn."""
    session = await owned(db, user_id, session_id)
    message = await agent_sessions.human_reply(svc, session, body.request_id, body.content)
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
    session = await owned(db, user_id, session_id)
    cursor = parse_before(before)
    rows = await session_store.message_page(db, session.id, cursor, limit)
    items = [
        CitedMessageOut(
            id=str(m.id),
            role=m.role,
            content=m.content,
            turn_id=str(m.turn_id),
            created_at=m.created_at,
            usage=m.usage,
            citations=m.citations,
            tool_calls=[
                ToolCallOut(id=c["id"], name=c["name"], arguments=c.get("arguments") or "")
                for c in m.tool_calls
            ]
            if m.tool_calls
            else None,
            tool_call_id=m.tool_call_id,
            name=m.tool_name,
        )
        for m in rows
    ]
    return CitedMessagePage(items=items, next_before=items[-1].id if len(items) == limit else None)


def parse_before(before: str | None) -> int | None:
    if before is None:
        return None
    if not before.isdigit() or len(before) > 20:
        raise ChateeError("before must be a message id", "bad-cursor")
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
    svc: Svc,
    after: Annotated[
        str | None, Query(description="stream id to resume after; 0 replays all")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """SSE of the session's events. `id:` is the Redis stream id; reconnect with
    `Last-Event-ID` (or `?after=`) to resume. Without either, only new events are sent."""
    session = await owned(db, caller.user_id, session_id)
    cursor = last_event_id or after
    if cursor is not None and not is_stream_id(cursor):
        raise ChateeError(
            "Last-Event-ID / after must be a stream id like 1700000000000-0", "bad-cursor"
        )
    if cursor is None:
        cursor = await svc.bus.last_id(session.id)
    await db.close()  # do not hold a pooled connection for the life of the stream
    return event_source(svc.bus.follow(session.id, cursor), svc, caller)
