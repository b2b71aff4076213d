"""Sending to an agent: `POST /chat/send` and `/chat/stream` over `chatee.agent_sessions`."""

from __future__ import annotations

from fastapi import APIRouter, status
from sse_starlette import EventSourceResponse

from api.deps import Caller, Svc, UserId, parse_id
from api.schemas import ChatAccepted, ChatIn
from api.sse import event_source
from chatee import agent_sessions
from chatee.agent_sessions import Accepted

router = APIRouter(prefix="/chat", tags=["chat"])


@router.post("/send", status_code=status.HTTP_202_ACCEPTED)
async def send(body: ChatIn, user_id: UserId, svc: Svc) -> ChatAccepted:
    """Queue a turn; its events arrive on `GET /sessions/{id}/events`. Idempotent on
    `client_msg_id`: a resend returns the first send's ids and never starts a second turn."""
    return accepted_out(await _submit(svc, user_id, body))


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(body: ChatIn, caller: Caller, svc: Svc) -> EventSourceResponse:
    """Queue a turn and stream its events, ending after `turn.completed` or `turn.failed`."""
    accepted = await _submit(svc, caller.user_id, body)
    events = agent_sessions.turn_events(svc, body.session_id, accepted.after, accepted.turn_id)
    return event_source(events, svc, caller)


async def _submit(svc: Svc, user_id: int, body: ChatIn) -> Accepted:
    session_id = parse_id(body.session_id, "session")
    return await agent_sessions.submit_turn(
        svc, user_id, session_id, body.content, body.client_msg_id
    )


def accepted_out(accepted: Accepted) -> ChatAccepted:
    return ChatAccepted(turn_id=str(accepted.turn_id), message_id=str(accepted.message_id))
