"""Fan-out and agent-relay activities of the `chatee-messages` queue (see workflows/fanout.py).

Every activity here may run twice: deliveries are idempotent per (user, message, change) in
the ledger, the agent's reply is appended under client_msg_id `turn:<turn id>`, and the relay
resumes from the stream id it last heartbeated (events after it may be relayed again; clients
drop an `agent.event` whose `id` they have seen).
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from chatee.bus import Event
from chatee.messaging import conversations, ledger
from chatee.messaging.fanout import batch_bounds, member_users
from chatee.messaging.types import Draft
from chatee.models import Conversation, Message
from chatee.services import Services
from workflows import names
from workflows.events import FINAL, TURN_COMPLETED
from workflows.fanout import (
    BatchInput,
    Bound,
    FanoutInput,
    FanoutPlan,
    PostReplyInput,
    RelayInput,
    RelayOutcome,
)


def agent_event_frame(conversation_id: str, agent_id: str, event: Event) -> dict[str, Any]:
    return {
        "type": "agent.event",
        "conversation_id": conversation_id,
        "agent_id": agent_id,
        "event": event.event,
        "id": event.id,
        "data": event.data,
    }


class FanoutActivities:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.cache = services.messenger.cache
        self.pushes = services.messenger.pushes
        self.store = services.messages

    @activity.defn(name=names.PLAN_FANOUT)
    async def plan(self, inp: FanoutInput) -> FanoutPlan:
        """User-id ranges of `batch_size` members each: ids in workflow history, not bodies."""
        sm = self.services.sessionmaker
        if inp.item == "change":
            row = (await ledger.change_rows(sm, [int(inp.message_id)])).get(int(inp.message_id))
        else:
            row = await ledger.message_row(sm, int(inp.message_id))
        if row is None:
            return FanoutPlan(None, [])
        async with self.services.sessionmaker() as db:
            conversation = await db.get(Conversation, row.conversation_id)
        if conversation is None:
            return FanoutPlan(None, [])
        audience = conversation.parent_id or conversation.id
        users = await member_users(self.services.sessionmaker, audience)
        bounds = [
            Bound(str(after), None if upto is None else str(upto))
            for after, upto in batch_bounds(users, inp.batch_size)
        ]
        return FanoutPlan(str(audience), bounds)

    @activity.defn(name=names.DELIVER_BATCH)
    async def deliver_batch(self, batch: BatchInput) -> int:
        upto = int(batch.upto_user) if batch.upto_user is not None else None
        users = await member_users(
            self.services.sessionmaker, int(batch.audience_id), int(batch.after_user), upto
        )
        m = self.services.messenger
        found = await m.load(int(batch.message_id), change=batch.item == "change")
        if found is None:
            return 0
        return len(await m.deliver(found, users, path="workflow"))  # after what precedes it

    @activity.defn(name=names.FINISH_FANOUT)
    async def finish(self, message_id: str) -> None:
        """Mark the message, or the change with this id, fanned out (ids are unique across
        both: snowflakes)."""
        await self.store.mark_fanned_out(int(message_id))
        await self.store.mark_change_done(int(message_id))

    @activity.defn(name=names.RELAY_AGENT_TURN)
    async def relay(self, inp: RelayInput) -> RelayOutcome:
        """Follow the session's stream and push the turn's events to the conversation's
        members until the turn ends. The stream id is the heartbeat, so a retry resumes."""
        details = activity.info().heartbeat_details
        cursor = str(details[0]) if details else inp.after
        view = await conversations.load_view(
            self.services.sessionmaker, self.cache, int(inp.conversation_id)
        )
        users = view.user_ids() if view is not None else []
        while True:
            activity.heartbeat(cursor)
            events = await self.services.bus.read(inp.session_id, cursor, block_ms=5000)
            frames = []
            outcome = None
            for event in events:
                cursor = event.id
                if event.data.get("turn_id") != inp.turn_id:
                    continue
                frames.append(agent_event_frame(inp.conversation_id, inp.agent_id, event))
                if event.event in FINAL:
                    reply = event.data.get("message_id")
                    status = "completed" if event.event == TURN_COMPLETED else "failed"
                    outcome = RelayOutcome(status, str(reply) if reply else None)
                    break
            await self.pushes.frames(users, frames)
            if outcome is not None:
                return outcome

    @activity.defn(name=names.POST_AGENT_REPLY)
    async def post_reply(self, inp: PostReplyInput) -> str | None:
        """The agent's reply as a conversation message from the agent, once per turn."""
        async with self.services.sessionmaker() as db:
            reply = await db.get(Message, int(inp.reply_message_id))
        if reply is None or not reply.content:
            return None
        draft = Draft(
            conversation_id=int(inp.conversation_id),
            sender_id=int(inp.agent_id),
            content=reply.content,
            client_msg_id=f"turn:{inp.turn_id}",
            sender_type="agent",
            meta={"turn_id": inp.turn_id, "session_id": inp.session_id},
        )
        try:
            message, _ = await self.store.append(draft)
        except ledger.ConversationGone:
            return None
        return str(message.id)
