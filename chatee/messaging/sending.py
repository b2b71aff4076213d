"""Sending a conversation message: the one flow that REST, WebSocket and recovery share.

Append once (per `client_msg_id`), run any agent the message calls on, then fan out (see
`chatee.messaging.service`). Agents first, fan-out last: the ledger says `pending` until the
fan-out is done, so a crash anywhere between is resumed — by a resend, or by the recovery loop
(`resume_send`) — and every step is idempotent. A send stays accepted while Temporal is away:
recovery retries it.
"""

from __future__ import annotations

import uuid

from temporalio.service import RPCError

from chatee.errors import Unavailable
from chatee.logging import get_logger
from chatee.messaging import conversations
from chatee.messaging.agents import might_run_agents, run_agents
from chatee.messaging.conversations import View
from chatee.messaging.types import ChatMessage
from chatee.services import Services

log = get_logger(__name__)


async def send_message(
    svc: Services, view: View, user_id: int, content: str, client_msg_id: str | None
) -> ChatMessage:
    """Store the message and put it in every member's inbox (or hand that to the fan-out
    workflow); answered once it is durable."""
    sent = await svc.messenger.append(
        view,
        user_id,
        content,
        client_msg_id or f"srv-{uuid.uuid4().hex}",
        fan_out=not might_run_agents(view, content),
    )
    if sent.pending:
        await complete_send(svc, view, sent.message)
    return sent.message


async def complete_send(svc: Services, view: View, message: ChatMessage) -> None:
    try:
        if message.sender_type == "user":
            await run_agents(svc, view, message)
        await svc.messenger.fan_out(view, message)
    except (RPCError, Unavailable):
        log.warning("send stored; fan-out resumes when Temporal is back", message=message.id)


async def resume_send(svc: Services, message_id: int) -> None:
    """Finish a send whose process died between storing and fanning out."""
    m = svc.messenger
    message = await m.store.get(message_id)
    if message is None:
        return
    view = await conversations.load_view(m.db, m.cache, message.conversation_id)
    if view is None:
        await m.store.mark_fanned_out(message_id)
        return
    log.info("resuming an unfinished send", message=message_id)
    await complete_send(svc, view, message)
