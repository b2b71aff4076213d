"""Agents in conversations: which agents a message calls on, and handing it to them.

A private chat with an agent runs it on every message; in a group (or thread) `@name` runs the
agent of that name among the members, else one of the sender's own agents. Each agent has one
session per conversation (made with its workflow on first use, owned by the agent's owner);
the message becomes a turn of that session — the same path as `POST /chat/send` — and the
`AgentReplyRelay` workflow streams the turn to the members and posts the reply.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from chatee import agent_sessions
from chatee.errors import Conflict, Unavailable
from chatee.logging import get_logger
from chatee.messaging import conversations
from chatee.messaging.conversations import View
from chatee.messaging.types import ChatMessage
from chatee.models import Agent, ConversationAgent, Session
from chatee.services import Services
from workflows.fanout import RelayInput
from workflows.names import MESSAGES_QUEUE, RELAY_WORKFLOW, relay_workflow_id

log = get_logger(__name__)
MENTION = re.compile(r"(?<![\w@])@([\w.\-]{1,64})")


def _norm(name: str) -> str:
    return re.sub(r"\s+", "-", name.strip().lower())


def might_run_agents(view: View, content: str) -> bool:
    """Whether `agents_to_run` could find any (without its lookups): a private chat with an
    agent, or an `@mention`."""
    return bool(view.agent_ids()) if view.type == "private" else MENTION.search(content) is not None


async def agents_to_run(svc: Services, view: View, message: ChatMessage) -> list[int]:
    agent_members = view.agent_ids()
    if view.type == "private":
        return agent_members
    wanted = {_norm(name) for name in MENTION.findall(message.content)}
    if not wanted:
        return []
    m = svc.messenger
    chosen: list[int] = []
    for agent_id in agent_members:
        config = await conversations.agent_config(m.db, m.cache, agent_id)
        if config is not None and _norm(config["name"]) in wanted:
            wanted.discard(_norm(config["name"]))
            chosen.append(agent_id)
    if wanted:
        async with svc.sessionmaker() as db:
            own = (
                await db.execute(select(Agent).where(Agent.owner_id == message.sender_id))
            ).scalars()
            for agent in own:
                if _norm(agent.name) in wanted:
                    wanted.discard(_norm(agent.name))
                    chosen.append(agent.id)
    return chosen


async def run_agents(svc: Services, view: View, message: ChatMessage) -> None:
    agents = await agents_to_run(svc, view, message)
    if not agents:
        return
    names = await conversations.usernames(svc.sessionmaker, [message.sender_id])
    for agent_id in agents:
        await run_agent(svc, view, message, agent_id, names.get(message.sender_id, "someone"))


async def run_agent(
    svc: Services, view: View, message: ChatMessage, agent_id: int, sender_name: str
) -> None:
    """Hand the message to the conversation's session of this agent, and start the relay.
    Idempotent per message: a resend or recovery re-offers the same turn."""
    async with svc.sessionmaker() as db:
        agent = await db.get(Agent, agent_id)
    if agent is None:
        return
    session = await conversation_session(svc, view, agent)
    text = message.content
    if view.type != "private":  # the agent should know who is talking
        text = f"{sender_name}: {text}"
    turn_message, after = await agent_sessions.store_user_message(
        svc, session.id, text, f"conv:{message.id}"
    )
    try:
        await agent_sessions.offer_turn(svc, session, agent, turn_message)
    except Conflict as exc:
        log.info("agent turn refused", agent=agent.id, conversation=view.id, reason=exc.detail)
        return
    knobs = svc.settings.messaging
    await svc.temporal.start_workflow(
        RELAY_WORKFLOW,
        RelayInput(
            conversation_id=str(view.id),
            agent_id=str(agent.id),
            session_id=str(session.id),
            turn_id=str(turn_message.turn_id),
            after=after,
            batch_size=knobs.fanout_batch_size,
            parallelism=knobs.fanout_parallelism,
        ),
        id=relay_workflow_id(turn_message.turn_id),
        task_queue=MESSAGES_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"agent {agent.name} in conversation {view.id}",
    )


async def conversation_session(svc: Services, view: View, agent: Agent) -> Session:
    """The one session of this agent in this conversation, made (with its workflow) on first
    use. It belongs to the agent's owner, like any session of that agent."""
    async with svc.sessionmaker() as db:
        link = await db.get(ConversationAgent, (view.id, agent.id))
        if link is not None:
            session = await db.get(Session, link.session_id)
            if session is not None:
                return session
        session = agent_sessions.new_session(agent.owner_id, agent, f"{view.type} {view.id}")
        db.add(session)
        db.add(ConversationAgent(conversation_id=view.id, agent_id=agent.id, session_id=session.id))
        try:
            await db.flush()
        except IntegrityError:  # another send made it first
            await db.rollback()
            return await _linked_session(db, view, agent)
        try:
            await agent_sessions.start_workflow(svc, session, agent, f"{view.type} {view.id}")
        except RPCError:
            raise Unavailable("Temporal") from None
        try:
            await db.commit()
        except IntegrityError:
            await db.rollback()
            handle = svc.temporal.get_workflow_handle(session.workflow_id)
            await handle.terminate("another process opened this conversation's session first")
            return await _linked_session(db, view, agent)
        return session


async def _linked_session(db: AsyncSession, view: View, agent: Agent) -> Session:
    link = await db.get(ConversationAgent, (view.id, agent.id))
    assert link is not None
    found = await db.get(Session, link.session_id)
    assert found is not None
    return found
