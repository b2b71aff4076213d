"""Durable messaging work on `chatee-messages`: large fan-outs and agent replies.

`MessageFanout` (id `fanout-<message id>`) writes a message — or a change to one (`item`
`change`: an edit, a deletion, a reaction, a membership change) — into every member's inbox in
batches of user-id ranges, a few batches at a time; each batch is one retried activity and
is idempotent per (user, message), so a retry or a second run never delivers twice. Once it
is started the send is durable: the API process may die, the workers finish the delivery.

`AgentReplyRelay` (id `relay-<turn id>`) follows one agent turn run for a conversation: it
relays the session's events to the members as `agent.event` frames, then posts the reply into
the conversation as a message from the agent (idempotent on the turn id) and fans it out.

Inputs and results are ids only (claim-check): bodies stay in the message store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows import names


@dataclass
class FanoutInput:
    message_id: str  # or the change's id
    batch_size: int = 100
    parallelism: int = 4
    item: str = "message"  # message | change


@dataclass
class Bound:
    after_user: str  # exclusive
    upto_user: str | None  # inclusive; None: open-ended


@dataclass
class FanoutPlan:
    audience_id: str | None  # None: the message or its conversation is gone
    bounds: list[Bound]


@dataclass
class BatchInput:
    message_id: str
    audience_id: str
    after_user: str
    upto_user: str | None
    item: str = "message"  # message | change


@dataclass
class RelayInput:
    conversation_id: str
    agent_id: str
    session_id: str
    turn_id: str
    after: str  # the session stream id to read the turn's events after
    batch_size: int = 100
    parallelism: int = 4


@dataclass
class RelayOutcome:
    status: str  # completed | failed
    reply_message_id: str | None  # the session message holding the reply


@dataclass
class PostReplyInput:
    conversation_id: str
    agent_id: str
    session_id: str
    turn_id: str
    reply_message_id: str


_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


async def fan_out(inp: FanoutInput) -> int:
    """Plan, deliver every batch, mark the message fanned out. Returns entries written."""
    plan: FanoutPlan = await workflow.execute_activity(
        names.PLAN_FANOUT,
        inp,
        result_type=FanoutPlan,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=_RETRY,
        summary=f"plan fan-out of {inp.item} {inp.message_id}",
    )
    delivered = 0
    if plan.audience_id is not None:
        batches = [
            BatchInput(inp.message_id, plan.audience_id, b.after_user, b.upto_user, inp.item)
            for b in plan.bounds
        ]
        for i in range(0, len(batches), max(1, inp.parallelism)):
            results = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        names.DELIVER_BATCH,
                        batch,
                        result_type=int,
                        start_to_close_timeout=timedelta(seconds=60),
                        retry_policy=_RETRY,
                        summary=f"{inp.item} {inp.message_id}: users after {batch.after_user}",
                    )
                    for batch in batches[i : i + inp.parallelism]
                )
            )
            delivered += sum(results)
    await workflow.execute_activity(
        names.FINISH_FANOUT,
        inp.message_id,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=_RETRY,
    )
    return delivered


@workflow.defn(name=names.FANOUT_WORKFLOW)
class MessageFanout:
    @workflow.run
    async def run(self, inp: FanoutInput) -> int:
        return await fan_out(inp)


@workflow.defn(name=names.RELAY_WORKFLOW)
class AgentReplyRelay:
    @workflow.run
    async def run(self, inp: RelayInput) -> str | None:
        outcome: RelayOutcome = await workflow.execute_activity(
            names.RELAY_AGENT_TURN,
            inp,
            result_type=RelayOutcome,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
            summary=f"relay turn {inp.turn_id} to conversation {inp.conversation_id}",
        )
        if outcome.status != "completed" or outcome.reply_message_id is None:
            return None
        posted: str | None = await workflow.execute_activity(
            names.POST_AGENT_REPLY,
            PostReplyInput(
                inp.conversation_id,
                inp.agent_id,
                inp.session_id,
                inp.turn_id,
                outcome.reply_message_id,
            ),
            result_type=str,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
            summary=f"post the reply of turn {inp.turn_id}",
        )
        if posted is not None:
            await fan_out(FanoutInput(posted, inp.batch_size, inp.parallelism))
        return posted
