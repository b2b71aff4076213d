"""ConversationAgentTurns: the durable hand-off of one conversation message to its agents.

A message that runs agents (any message in a private chat with an agent, an `@mention` in a
group) is stored and delivered like any other; the send then only starts this workflow (id
`agents-<message id>`, on `chatee-messages`), which needs the Temporal server but no worker, so
a send never waits on one. From here on the hand-off is Temporal's to finish: the workflow
finds the agents the message calls on and turns it into a turn of each agent's session for the
conversation (prepare), puts that turn in the session's mailbox (offer: retried until the
agents' worker takes it), follows the turn (follow): its events go to the members, and its
reply is a message from the agent from its first words on, streamed in place; then it posts
how the turn ended (post): the final text replaces the streamed one (an edit), or a short
system message says the agent could not answer and why.

Inputs and results are ids only (claim-check): bodies stay in the stores.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows import names


@dataclass
class AgentsInput:
    conversation_id: str
    message_id: str  # the conversation message that calls on agents
    revision: str = ""  # an edit of it that re-runs its turns (steering)
    double_texting: str = ""  # the policy the turns are offered with ("": the agent's own)


@dataclass
class AgentTurn:
    """One agent's turn for the message: the session message holding it, and the session
    stream id its events follow (`0-0` when a retry found the message stored before)."""

    conversation_id: str
    message_id: str
    agent_id: str
    session_id: str
    turn_id: str
    after: str
    double_texting: str = ""


@dataclass
class TurnEnd:
    status: str  # offered (still running) | completed | failed | refused
    reply_message_id: str | None = None  # the session message holding the reply
    error_type: str | None = None
    streamed_id: str | None = None  # the conversation message the reply streamed into


@dataclass
class TurnOutcome:
    turn: AgentTurn
    end: TurnEnd


_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name=names.CONVERSATION_AGENTS_WORKFLOW)
class ConversationAgentTurns:
    @workflow.run
    async def run(self, inp: AgentsInput) -> list[str]:
        turns: list[AgentTurn] = await workflow.execute_activity(
            names.PREPARE_AGENT_TURNS,
            inp,
            result_type=list[AgentTurn],
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_RETRY,
            summary=f"agents called on by message {inp.message_id}",
        )
        posted = await asyncio.gather(*(self._turn(turn) for turn in turns))
        return [p for p in posted if p]

    async def _turn(self, turn: AgentTurn) -> str:
        end: TurnEnd = await workflow.execute_activity(
            names.OFFER_AGENT_TURN,
            turn,
            result_type=TurnEnd,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_RETRY,
            summary=f"offer turn {turn.turn_id} to agent {turn.agent_id}",
        )
        if end.status == "offered":
            end = await workflow.execute_activity(
                names.FOLLOW_AGENT_TURN,
                turn,
                result_type=TurnEnd,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=_RETRY,
                summary=f"relay turn {turn.turn_id} to conversation {turn.conversation_id}",
            )
        posted: str = await workflow.execute_activity(
            names.POST_AGENT_OUTCOME,
            TurnOutcome(turn, end),
            result_type=str,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_RETRY,
            summary=f"post how turn {turn.turn_id} ended",
        )
        return posted
