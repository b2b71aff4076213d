"""Sending to an agent: store the user message, then hand its id to the session's actor.

`client_msg_id` makes a send idempotent: a resend returns the first send's ids, and re-offers
the turn to the workflow under the same update id (a no-op if it already has it), which also
heals a send whose first attempt stored the message but never reached Temporal.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy.exc import IntegrityError
from sse_starlette import EventSourceResponse
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import DB, Caller, Res, UserId
from api.errors import Problem, not_found, unavailable
from api.routers.sessions import owned_session_or_404
from api.schemas import ChatAccepted, ChatIn
from api.sse import event_source, turn_events
from chatee import store
from chatee.ids import new_id
from chatee.models import Agent, Message, Session
from workflows.chain import DEFAULT_CHAIN
from workflows.types import SendMessage

router = APIRouter(prefix="/chat", tags=["chat"])


@router.post("/send", status_code=status.HTTP_202_ACCEPTED)
async def send(body: ChatIn, user_id: UserId, db: DB, res: Res) -> ChatAccepted:
    """Queue a turn; its events arrive on `GET /sessions/{id}/events`."""
    accepted, _ = await submit_turn(body, user_id, db, res)
    return accepted


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(body: ChatIn, caller: Caller, db: DB, res: Res) -> EventSourceResponse:
    """Queue a turn and stream its events, ending after `turn.completed` or `turn.failed`."""
    accepted, after = await submit_turn(body, caller.user_id, db, res)
    events = res.bus.follow(int(body.session_id), after)
    return event_source(turn_events(events, accepted.turn_id), res, caller)


async def submit_turn(body: ChatIn, user_id: int, db: DB, res: Res) -> tuple[ChatAccepted, str]:
    """Store the message and deliver the turn. Returns the ids and the stream id to read the
    turn's events after (`0-0` for a resend, whose events may already be out)."""
    limit = res.settings.limits.max_message_bytes
    if len(body.content.encode()) > limit:
        raise Problem(413, f"content is over the {limit}-byte limit", "/problems/message-too-large")
    session = await owned_session_or_404(db, user_id, body.session_id)
    if session.status == "closed":
        raise Problem(409, "the session is closed", "/problems/session-closed")
    agent = await db.get(Agent, session.agent_id)
    if agent is None:
        raise not_found("agent")

    existing = None
    if body.client_msg_id:
        existing = await store.message_by_client_id(db, session.id, body.client_msg_id)
    if existing is not None:
        message, after = existing, "0-0"
    else:
        after = await res.bus.last_id(session.id)
        message = Message(
            id=new_id(),
            session_id=session.id,
            role="user",
            content=body.content,
            turn_id=new_id(),
            client_msg_id=body.client_msg_id,
        )
        db.add(message)
        try:
            await db.commit()
        except IntegrityError:
            await db.rollback()
            raced = None
            if body.client_msg_id:  # the same client_msg_id raced in on another request
                raced = await store.message_by_client_id(db, session.id, body.client_msg_id)
            if raced is None:
                raise Problem(409, "the message clashed with another; send it again") from None
            message, after = raced, "0-0"

    try:
        await deliver(res, session, agent, message)
    except Problem as problem:
        # 409: definitely refused, the turn will never run. Anything else (503: Temporal away)
        # without a client_msg_id cannot be healed by a resend: leave nothing half-written —
        # except an unconfirmed turn, which may still run and needs its message.
        if problem.status == 409 or (body.client_msg_id is None and problem.type != UNCONFIRMED):
            await _forget(db, message)
        raise
    except Exception:
        if body.client_msg_id is None:  # no way to heal it later: leave nothing half-written
            await _forget(db, message)
        raise
    return ChatAccepted(turn_id=str(message.turn_id), message_id=str(message.id)), after


UNCONFIRMED = "/problems/turn-unconfirmed"


async def deliver(res: Res, session: Session, agent: Agent, message: Message) -> None:
    turn_id = str(message.turn_id)
    handle = res.temporal.get_workflow_handle(session.workflow_id)
    try:
        # the handler only queues the turn, so the update completes as soon as it is accepted
        await handle.execute_update(
            "send_message",
            SendMessage(
                turn_id=turn_id,
                message_id=str(message.id),
                double_texting=agent.double_texting,
                chain=agent.chain or list(DEFAULT_CHAIN),
            ),
            id=f"turn-{turn_id}",
            result_type=str,
        )
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        # the worker is too busy to confirm in time; the update may still be accepted later
        raise Problem(
            503,
            "the session did not confirm the turn in time; it may still run — resend with the "
            "same client_msg_id to find out (a resend never starts a second turn)",
            UNCONFIRMED,
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == "SessionBusy":
            raise Problem(409, cause.message, "/problems/session-busy") from None
        raise Problem(409, "the session is closed", "/problems/session-closed") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Problem(409, "the session is closed", "/problems/session-closed") from None
        raise unavailable("Temporal") from None


async def _forget(db: DB, message: Message) -> None:
    await db.delete(message)
    await db.commit()
