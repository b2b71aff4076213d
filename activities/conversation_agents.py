"""Activities of `ConversationAgentTurns` on `chatee-messages` (see
workflows/conversation_agents.py and chatee.messaging.agents).

Each may run twice: the turn's session message is stored once per conversation message, the
offer is the session's idempotent `send_message` update, the relay resumes from the stream id
it last heartbeated (events after it may be relayed again; clients drop an `agent.event` whose
`id` they have seen), and what is posted is appended once per turn.
"""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity

from activities.fanout import agent_event_frame
from chatee.bus import Event
from chatee.messaging import agents, conversations
from chatee.messaging.types import ChatMessage
from chatee.services import Services
from workflows import names
from workflows.conversation_agents import AgentsInput, AgentTurn, TurnEnd, TurnOutcome
from workflows.events import FINAL, MESSAGE_DELTA, STEP_RETRY, TURN_COMPLETED

FLUSH_MS = 200  # a streaming reply is saved, and its deltas pushed, at most this often


class ConversationAgentActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.PREPARE_AGENT_TURNS)
    async def prepare(self, inp: AgentsInput) -> list[AgentTurn]:
        prepared = await agents.prepare_turns(
            self.services, int(inp.conversation_id), int(inp.message_id), inp.revision
        )
        return [
            AgentTurn(
                inp.conversation_id,
                inp.message_id,
                str(p.agent_id),
                str(p.session_id),
                str(p.turn_id),
                p.after,
                inp.double_texting,
            )
            for p in prepared
        ]

    @activity.defn(name=names.OFFER_AGENT_TURN)
    async def offer(self, turn: AgentTurn) -> TurnEnd:
        refused = await agents.offer(
            self.services,
            int(turn.agent_id),
            int(turn.session_id),
            int(turn.turn_id),
            turn.double_texting or None,
        )
        if refused is not None:
            return TurnEnd("refused", error_type=refused)
        return TurnEnd("offered")

    @activity.defn(name=names.FOLLOW_AGENT_TURN)
    async def follow(self, turn: AgentTurn) -> TurnEnd:
        """Push the turn's events to the conversation's members (`agent.event`) until it
        ends, and stream its reply into a message of the conversation: made at the first
        words, its text so far saved in place, then pushed as `message.delta` frames.

        The text is rebuilt from the turn's first event on every attempt (the stream keeps
        them), so a retry never doubles it; the heartbeat is the last event pushed, so a retry
        pushes only what may not have gone out (a delta says where it goes: pushing one again
        changes nothing)."""
        details = activity.info().heartbeat_details
        pushed = str(details[0]) if details else None
        m = self.services.messenger
        view = await conversations.load_view(m.db, m.cache, int(turn.conversation_id))
        users = view.user_ids() if view is not None else []
        reply = Streamed(turn)
        cursor, frames, saved_at = turn.after, [], 0.0
        while True:
            activity.heartbeat(pushed)
            block = FLUSH_MS if frames else 5000
            events = await self.services.bus.read(turn.session_id, cursor, block_ms=block)
            end = None
            for event in events:
                cursor = event.id
                if event.data.get("turn_id") != turn.turn_id:
                    continue
                frames += await reply.take(self.services, event)
                frames.append(agent_event_frame(turn.conversation_id, turn.agent_id, event))
                if event.event in FINAL:
                    end = _ending(event, reply.message_id)
                    break
            now = time.monotonic()
            if frames and (end is not None or now - saved_at >= FLUSH_MS / 1000):
                await reply.save(self.services)  # before its deltas go out: see `Streamed`
                if pushed is None or _after(cursor, pushed):
                    await m.pushes.frames(users, frames)
                    pushed = cursor
                frames, saved_at = [], now
            if end is not None:
                return end

    @activity.defn(name=names.POST_AGENT_OUTCOME)
    async def post(self, outcome: TurnOutcome) -> str:
        turn, end = outcome.turn, outcome.end
        posted = await agents.post_outcome(
            self.services,
            int(turn.conversation_id),
            int(turn.agent_id),
            int(turn.session_id),
            int(turn.turn_id),
            int(turn.message_id),
            end.status,
            int(end.reply_message_id) if end.reply_message_id else None,
            end.error_type,
            int(end.streamed_id) if end.streamed_id else None,
        )
        return str(posted.id) if posted is not None else ""


class Streamed:
    """A turn's reply as it streams into its conversation message.

    Its text is kept in the message (`save`, with `meta.deltas`: how many deltas it holds)
    before the deltas that made it are pushed, so a device that loads the message mid-reply
    and then follows the pushes misses nothing: it applies, in `index` order, the
    `message.delta` frames whose `index` is above the message's `meta.deltas` — each says
    where its text goes (`content = content[:offset] + text`). `step.retry` drops that step's
    partial text (a delta with the step's start as offset and no text)."""

    def __init__(self, turn: AgentTurn) -> None:
        self.turn = turn
        self.message: ChatMessage | None = None
        self.text = ""
        self.saved = -1  # deltas in the saved text
        self.deltas = 0
        self.step_starts: dict[Any, int] = {}

    @property
    def message_id(self) -> str | None:
        return str(self.message.id) if self.message is not None else None

    async def take(self, svc: Services, event: Event) -> list[dict[str, Any]]:
        """The `message.delta` frames an event makes (none for most)."""
        if event.event == STEP_RETRY:
            start = self.step_starts.pop(event.data.get("step"), None)
            if start is None or self.message is None:
                return []
            self.text = self.text[:start]
            return [self._delta(start, "")]
        if event.event != MESSAGE_DELTA or not event.data.get("text"):
            return []
        if self.message is None:
            t = self.turn
            self.message = await agents.start_reply(
                svc, int(t.conversation_id), int(t.agent_id), int(t.session_id), int(t.turn_id)
            )
            if self.message is None:  # the conversation is gone
                return []
        offset = len(self.text)
        self.step_starts.setdefault(event.data.get("step"), offset)
        self.text += event.data["text"]
        return [self._delta(offset, event.data["text"])]

    def _delta(self, offset: int, text: str) -> dict[str, Any]:
        assert self.message is not None
        self.deltas += 1
        return {
            "type": "message.delta",
            "conversation_id": self.turn.conversation_id,
            "message_id": str(self.message.id),
            "index": self.deltas,
            "offset": offset,
            "text": text,
        }

    async def save(self, svc: Services) -> None:
        if self.message is not None and self.deltas != self.saved:
            await agents.save_streamed(svc, self.message, self.text, self.deltas)
            self.saved = self.deltas


def _after(a: str, b: str) -> bool:
    """Whether Redis stream id `a` comes after `b`."""
    ma, sa = (int(x) for x in a.split("-"))
    mb, sb = (int(x) for x in b.split("-"))
    return (ma, sa) > (mb, sb)


def _ending(event: Event, streamed_id: str | None) -> TurnEnd:
    if event.event == TURN_COMPLETED:
        reply = event.data.get("message_id")
        return TurnEnd("completed", str(reply) if reply else None, streamed_id=streamed_id)
    error = event.data.get("error") or {}
    return TurnEnd("failed", error_type=str(error.get("type") or "error"), streamed_id=streamed_id)
