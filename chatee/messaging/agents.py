"""Agents in conversations: which agents a message calls on, handing it to them, and posting
how their turns end.

A private chat with an agent runs it on every message; in a group (or thread) `@name` runs the
agent of that name among the members, else one of the sender's own agents. Each agent has one
session per conversation (made with its workflow on first use, owned by the agent's owner);
the message becomes a turn of that session — the same path as `POST /chat/send`.

The send itself only starts the `ConversationAgentTurns` workflow (`hand_off`): the message is
already in every inbox by then, and starting a workflow needs the Temporal server, not a
worker, so a send never waits on the agent. The workflow's activities call the rest of this
module: `prepare_turns`, `offer`, and `post_outcome` — the reply as a message from the agent,
delivered (and given its `seq`) in one step, or a short system message when the agent could
not answer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from chatee import agent_sessions
from chatee.errors import Conflict, Unavailable
from chatee.ids import new_id
from chatee.logging import get_logger
from chatee.messaging import conversations, ledger
from chatee.messaging.conversations import Member, View
from chatee.messaging.types import Change, ChatMessage
from chatee.models import (
    Agent,
    ConversationAgent,
    Message,
    Session,
    Turn,
)
from chatee.services import Services
from workflows.conversation_agents import AgentsInput
from workflows.names import (
    CONVERSATION_AGENTS_WORKFLOW,
    MESSAGES_QUEUE,
    conversation_agents_workflow_id,
)

log = get_logger(__name__)
MENTION = re.compile(r"(?<![\w@])@([\w.\-]{1,64})")

# what members read when an agent could not answer: a short phrase per failure type, never
# the provider's own words (they can carry account details or internals)
FAILURES = {
    "ProviderRejected": "its model provider refused the request",
    "LLMNotConfigured": "no model provider is configured for it",
    "AgentNotFound": "the agent no longer exists",
    "McpUnavailable": "a tool it needs is unavailable",
    "timeout": "it took too long to answer",
    "cancelled": "its turn was cancelled",
    "session-busy": "it is still answering an earlier message",
    "session-closed": "its session is closed",
}
UNKNOWN_FAILURE = "something went wrong"
# endings nobody needs told about: a newer message took the turn's place
SUPERSEDED = {"interrupted", "rolled_back"}


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


async def hand_off(
    svc: Services, view: View, message: ChatMessage, revision: str = "", double_texting: str = ""
) -> None:
    """Start the message's `ConversationAgentTurns` workflow (once per message and
    `revision`: a resend or the recovery loop finds it started, or finished, and leaves it
    be). Raises RPCError while the Temporal server is away; the message stays `pending` and
    recovery tries again."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await svc.temporal.start_workflow(
            CONVERSATION_AGENTS_WORKFLOW,
            AgentsInput(str(view.id), str(message.id), revision, double_texting),
            id=conversation_agents_workflow_id(message.id) + revision,
            task_queue=MESSAGES_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"agents called on in conversation {view.id}",
        )


@dataclass(frozen=True)
class Prepared:
    """One agent's turn for a conversation message (see `workflows.conversation_agents`)."""

    agent_id: int
    session_id: int
    turn_id: int
    after: str


async def prepare_turns(
    svc: Services, conversation_id: int, message_id: int, revision: str = ""
) -> list[Prepared]:
    """The message as a turn of each called agent's session for this conversation, stored
    once (`conv:<message id>`, plus the edit's `revision`): a retry finds what the first
    attempt stored."""
    m = svc.messenger
    message = await m.store.get(message_id)
    view = await conversations.load_view(m.db, m.cache, conversation_id)
    if message is None or message.deleted or view is None or message.sender_type != "user":
        return []
    agents = await agents_to_run(svc, view, message)
    if not agents:
        return []
    sender = view.members.get(message.sender_id) or Member(message.sender_id, "user", "member")
    names = await conversations.member_names(m.db, [sender])
    prepared = []
    for agent_id in agents:
        async with svc.sessionmaker() as db:
            agent = await db.get(Agent, agent_id)
        if agent is None:
            continue
        session = await conversation_session(svc, view, agent)
        text = message.content
        if view.type != "private":  # the agent should know who is talking
            text = f"{names.get(message.sender_id) or 'someone'}: {text}"
        turn_message, after = await agent_sessions.store_user_message(
            svc, session.id, text, f"conv:{message.id}{revision}"
        )
        prepared.append(Prepared(agent.id, session.id, turn_message.turn_id, after))
    return prepared


async def offer(
    svc: Services, agent_id: int, session_id: int, turn_id: int, double_texting: str | None = None
) -> str | None:
    """Put the prepared turn in the session's mailbox. None: the actor has it; else why it
    was refused for good (`session-busy`, `session-closed`). Raises Unavailable while the
    agents' worker cannot take it (the activity retries)."""
    async with svc.sessionmaker() as db:
        agent = await db.get(Agent, agent_id)
        session = await db.get(Session, session_id)
        turn_message = (
            await db.execute(
                select(Message).where(
                    Message.session_id == session_id,
                    Message.turn_id == turn_id,
                    Message.role == "user",
                )
            )
        ).scalar_one_or_none()
    if agent is None or session is None or turn_message is None:
        return "AgentNotFound"
    try:
        await agent_sessions.offer_turn(svc, session, agent, turn_message, double_texting)
    except Conflict as exc:
        log.info("agent turn refused", agent=agent_id, session=session_id, reason=exc.code)
        return exc.code or "session-busy"
    return None


def _reply_meta(turn_id: int, session_id: int) -> dict[str, str]:
    return {"turn_id": str(turn_id), "session_id": str(session_id)}


async def start_reply(
    svc: Services, conversation_id: int, agent_id: int, session_id: int, turn_id: int
) -> ChatMessage | None:
    """The agent's reply as a message from its first words on: empty, `meta.streaming`,
    stored and delivered at once (it takes its `seq` now, so nothing sent later lands before
    it). Once per turn (client_msg_id `turn:<id>`, like the finished reply)."""
    m = svc.messenger
    view = await conversations.load_view(m.db, m.cache, conversation_id)
    if view is None:
        return None
    meta = {**_reply_meta(turn_id, session_id), "streaming": True, "deltas": 0}
    return await _post(svc, view, agent_id, "", f"turn:{turn_id}", "agent", meta)


async def save_streamed(svc: Services, reply: ChatMessage, text: str, deltas: int) -> None:
    """The streamed reply's text so far, kept in place (no inbox entry) with how many deltas
    made it (`meta.deltas`): what a device that loads it mid-reply reads, before the deltas
    that follow."""
    meta = {**(reply.meta or {}), "deltas": deltas}
    await svc.messenger.store.write_in_place(replace(reply, content=text, meta=meta))


async def _change(
    svc: Services, view: View, record: Callable[[list[int] | None], Awaitable[Any]]
) -> Change | None:
    """Record an edit or deletion of the agent's reply and deliver it, as members' own are."""
    m = svc.messenger
    users = view.user_ids()
    inline = m.inline(users)
    try:
        change, items = await record(users if inline else None)
    except ledger.MessageDeleted:  # steered away meanwhile
        return None
    if change is not None:
        await m.publish_change(view, change, items, inline)
    return change


async def finish_streamed(svc: Services, view: View, reply_id: int, text: str) -> None:
    """The final text replaces the streamed one: an edit (`message.edited` in every inbox),
    with `meta.streaming` gone. A retry finds it finished and leaves it."""
    m = svc.messenger
    reply = await m.store.get(reply_id)
    if reply is None or reply.deleted or not (reply.meta or {}).get("streaming"):
        return
    meta = {k: v for k, v in (reply.meta or {}).items() if k not in ("streaming", "deltas")}
    final = replace(reply, meta=meta)
    change = await _change(svc, view, lambda users: m.store.edit(final, text, users))
    edited = replace(final, content=text)  # a retry: the edit was made before
    if change is not None and change.message is not None:
        edited = change.message
    await m.store.write_in_place(edited)  # its meta, without `streaming`


async def drop_streamed(svc: Services, view: View, reply_id: int, actor_id: int) -> None:
    """Remove a reply that will not be finished (a tombstone in its place)."""
    m = svc.messenger
    reply = await m.store.get(reply_id)
    if reply is None or reply.deleted:
        return
    await _change(svc, view, lambda users: m.store.delete(reply, actor_id, users))


async def post_outcome(
    svc: Services,
    conversation_id: int,
    agent_id: int,
    session_id: int,
    turn_id: int,
    asked_id: int,
    status: str,
    reply_message_id: int | None,
    error_type: str | None,
    streamed_id: int | None = None,
) -> ChatMessage | None:
    """Post how the turn ended: its reply as a message from the agent (the streamed message
    gets the final text), or a system message saying it could not answer and why. Once per
    turn (client_msg_id `turn:<id>` for the reply, `turn:<id>:failed` for the notice); None
    when there is nothing to post."""
    m = svc.messenger
    view = await conversations.load_view(m.db, m.cache, conversation_id)
    if view is None:
        return None
    meta = _reply_meta(turn_id, session_id)
    asked = await m.store.get(asked_id)
    if asked is None or asked.deleted or await _rerun(svc, session_id, asked_id, turn_id):
        # steered away: the message is gone, or an edit of it runs a newer turn
        if streamed_id is not None:
            await drop_streamed(svc, view, streamed_id, agent_id)
        return None
    text = ""
    if status == "completed" and reply_message_id is not None:
        async with svc.sessionmaker() as db:
            reply = await db.get(Message, reply_message_id)
        text = reply.content if reply is not None else ""
    if streamed_id is not None:
        if text:
            await finish_streamed(svc, view, streamed_id, text)
            return await m.store.get(streamed_id)
        await drop_streamed(svc, view, streamed_id, agent_id)
    if status == "completed":
        if not text:
            return None
        return await _post(svc, view, agent_id, text, f"turn:{turn_id}", "agent", meta)
    if error_type in SUPERSEDED:
        return None
    names = await conversations.member_names(m.db, [Member(agent_id, "agent", "member")])
    phrase = FAILURES.get(error_type or "", UNKNOWN_FAILURE)
    text = f"{names[agent_id]} could not answer: {phrase}."
    meta = {**meta, "agent_id": str(agent_id), "error": error_type or "error"}
    return await _post(svc, view, agent_id, text, f"turn:{turn_id}:failed", "system", meta)


async def _post(
    svc: Services,
    view: View,
    sender_id: int,
    content: str,
    client_msg_id: str,
    sender_type: str,
    meta: dict[str, str],
) -> ChatMessage | None:
    """Append and deliver in one step (a small audience), so the message takes its `seq`
    when it reaches the inboxes and never lands behind a later one."""
    m = svc.messenger
    try:
        sent = await m.append(
            view, sender_id, content, client_msg_id, sender_type, meta, fan_out=True
        )
    except ledger.ConversationGone:
        return None
    if sent.pending:  # a large audience, or a retry of one that did not finish
        await m.fan_out(view, sent.message)
    return sent.message


async def steer(svc: Services, view: View, message: ChatMessage, deleted: bool) -> None:
    """A member edited or deleted a message whose agent turns still run. Deleting it cancels
    them (their streamed replies go, nothing is posted); editing it re-runs them on the new
    text — the double-texting `rollback`: the running turn and its messages go, a new turn
    answers the edited text — and cancels those of agents the new text no longer calls on.
    Temporal being away leaves the turns as they are (the change itself stands)."""
    running = await _running_turns(svc, view.id, message.id)
    if not running:
        return
    keep: set[int] = set()
    try:
        if not deleted:
            keep = set(await agents_to_run(svc, view, message))
            if keep:
                await hand_off(svc, view, message, f":edit:{new_id()}", "rollback")
        for session, turn_id in running:
            if session.agent_id not in keep:
                with contextlib.suppress(Conflict):
                    await agent_sessions.cancel_turn(svc, session, str(turn_id))
    except (RPCError, Unavailable):
        log.warning("could not steer the agents' turns", message=message.id)


async def _running_turns(
    svc: Services, conversation_id: int, message_id: int
) -> list[tuple[Session, int]]:
    """The conversation's agent sessions whose turn for this message has not ended, with
    that turn's id."""
    key = f"conv:{message_id}"
    stmt = (
        select(Session, Message.turn_id)
        .join(ConversationAgent, ConversationAgent.session_id == Session.id)
        .join(Message, Message.session_id == Session.id)
        .outerjoin(Turn, Turn.id == Message.turn_id)
        .where(
            ConversationAgent.conversation_id == conversation_id,
            Message.role == "user",
            or_(Message.client_msg_id == key, Message.client_msg_id.like(f"{key}:%")),
            Turn.id.is_(None),
        )
        .distinct()
    )
    async with svc.sessionmaker() as db:
        return [(session, turn_id) for session, turn_id in (await db.execute(stmt)).all()]


async def _rerun(svc: Services, session_id: int, asked_id: int, turn_id: int) -> bool:
    """Whether an edit of the conversation message gave the session a newer turn for it."""
    stmt = select(Message.id).where(
        Message.session_id == session_id,
        Message.role == "user",
        Message.client_msg_id.like(f"conv:{asked_id}:%"),
        Message.turn_id > turn_id,
    )
    async with svc.sessionmaker() as db:
        return (await db.execute(stmt.limit(1))).first() is not None


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
