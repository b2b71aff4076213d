"""Sending a conversation message: the one flow that REST, WebSocket and recovery share.

Every message is stored and delivered the same way, at once: for a small audience the ledger
takes its `seq` and fills every member's inbox in one transaction, so within a conversation
every inbox holds its entries in `seq` order (a message that runs an agent included). What
follows is the durable hand-off to the agents: a message that may call on one stays `pending`
(already delivered) until its `ConversationAgentTurns` workflow is started, so a crash before
that is finished by a resend or by the recovery loop (`resume_send`); every step is idempotent.
Starting the workflow needs the Temporal server but no worker: a send never waits on an agent,
and stays accepted while Temporal is away (recovery retries the hand-off).
"""

from __future__ import annotations

import uuid

from temporalio.service import RPCError

from chatee.errors import Unavailable
from chatee.logging import get_logger
from chatee.messaging import conversations
from chatee.messaging.agents import hand_off, might_run_agents
from chatee.messaging.conversations import View
from chatee.messaging.types import ChatMessage
from chatee.services import Services

log = get_logger(__name__)


async def send_message(
    svc: Services, view: View, user_id: int, content: str, client_msg_id: str | None
) -> ChatMessage:
    """Store the message and put it in every member's inbox (or hand that to the fan-out
    workflow), then hand it to any agent it calls on; answered once it is durable."""
    sent = await svc.messenger.append(
        view,
        user_id,
        content,
        client_msg_id or f"srv-{uuid.uuid4().hex}",
        fan_out=True,
        hand_off=might_run_agents(view, content),
    )
    if sent.pending:
        await complete_send(svc, view, sent.message)
    return sent.message


async def complete_send(svc: Services, view: View, message: ChatMessage) -> None:
    """Hand off to the agents, then finish the fan-out (for a message already delivered in
    its append this finds every entry in place and only marks it done)."""
    try:
        if message.sender_type == "user" and might_run_agents(view, message.content):
            await hand_off(svc, view, message)
        await svc.messenger.fan_out(view, message)
    except (RPCError, Unavailable):
        log.warning("send stored; its hand-off resumes when Temporal is back", message=message.id)


async def resume_send(svc: Services, message_id: int) -> None:
    """Finish a send whose process died before its fan-out or hand-off was done."""
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
