"""Conversations between people (and agents): private chats, groups, threads, messages.

A conversation you are not in is a 404, exactly like one that does not exist. Sending runs in
`post_message`, shared with the WebSocket's `message.send`: append once, run any agent the
message calls on, then fan out (see `chatee.messaging.service`).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import Res, UserId, parse_id
from api.errors import Problem
from api.routers.chat import deliver
from api.routers.sessions import turn_options
from chatee import store as session_store
from chatee import temporal
from chatee.ids import new_id
from chatee.logging import get_logger
from chatee.messaging import conversations
from chatee.messaging.conversations import MessagingError, View
from chatee.messaging.service import Messenger
from chatee.messaging.types import ChatMessage
from chatee.models import Agent, Conversation, ConversationAgent, Message, Session
from workflows.fanout import RELAY_WORKFLOW, RelayInput, relay_workflow_id
from workflows.types import AGENTS_QUEUE, MESSAGES_QUEUE, SessionInput, session_workflow_id

log = get_logger(__name__)
router = APIRouter(prefix="/conversations", tags=["conversations"])
MENTION = re.compile(r"(?<![\w@])@([\w.\-]{1,64})")


def messenger(request: Request) -> Messenger:
    return request.app.state.messenger


Msg = Annotated[Messenger, Depends(messenger)]


def problem(exc: MessagingError) -> Problem:
    return Problem(exc.status, exc.detail, f"/problems/{exc.code}")


async def visible(m: Messenger, raw_id: str, user_id: int) -> View:
    try:
        return await m.view(parse_id(raw_id, "conversation"), user_id)
    except MessagingError as exc:
        raise problem(exc) from None


# -- schemas ------------------------------------------------------------------------------------


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["private", "group"]
    members: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="user ids, or ids of your own agents; a private chat names exactly one",
    )
    title: str | None = Field(None, max_length=255)


class ConversationOut(BaseModel):
    id: str
    type: str
    title: str | None
    parent_id: str | None
    created_by: str
    member_count: int
    last_seq: int
    last_read_seq: int
    unread: int
    role: str | None
    created_at: datetime
    last_message_at: datetime | None


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(min_length=1, max_length=10_000)
    role: Literal["admin", "member"] = "member"


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["owner", "admin", "member"]


class MemberOut(BaseModel):
    id: str
    kind: str
    role: str


class ThreadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=255)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1)
    client_msg_id: str | None = Field(
        None, min_length=1, max_length=128, description="makes the send idempotent"
    )


class ConversationMessageOut(BaseModel):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    sender_type: str
    content: str
    client_msg_id: str
    created_at: datetime
    meta: dict[str, Any] | None = None


class ConversationMessagePage(BaseModel):
    items: list[ConversationMessageOut]
    next_before_seq: int | None


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=0)


class ReadOut(BaseModel):
    conversation_id: str
    last_read_seq: int
    unread: int


def conversation_out(
    c: Conversation, last_read: int = 0, role: str | None = None
) -> ConversationOut:
    return ConversationOut(
        id=str(c.id),
        type=c.type,
        title=c.title,
        parent_id=str(c.parent_id) if c.parent_id else None,
        created_by=str(c.created_by),
        member_count=c.member_count,
        last_seq=c.last_seq,
        last_read_seq=last_read,
        unread=max(0, c.last_seq - last_read),
        role=role,
        created_at=c.created_at,
        last_message_at=c.last_message_at,
    )


def message_out(message: ChatMessage) -> ConversationMessageOut:
    return ConversationMessageOut.model_validate(message.to_json())


def _ids(raw: list[str]) -> list[int]:
    ids = []
    for value in raw:
        if not value.isdigit() or len(value) > 20 or int(value) >= 1 << 63:
            raise Problem(422, f"members: {value!r} is not an id", "/problems/validation")
        ids.append(int(value))
    return ids


# -- conversations and members ------------------------------------------------------------------


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    body: ConversationIn, user_id: UserId, m: Msg, response: Response
) -> ConversationOut:
    """A group (you are its owner), or the private chat with one user or one of your agents —
    an existing private chat is returned with 200."""
    ids = _ids(body.members)
    try:
        if body.type == "private":
            others = [i for i in ids if i != user_id]
            if len(others) != 1:
                raise MessagingError(
                    422, "a private chat has exactly one other member", "bad-members"
                )
            conversation, created = await conversations.create_private(m.db, user_id, others[0])
            if not created:
                response.status_code = status.HTTP_200_OK
                _, read = await conversations.unread_of(m.db, conversation.id, user_id)
                return conversation_out(conversation, read, "member")
            return conversation_out(conversation, 0, "member")
        group = await conversations.create_group(
            m.db, user_id, body.title, ids, m.knobs.max_group_members
        )
        return conversation_out(group, 0, "owner")
    except MessagingError as exc:
        raise problem(exc) from None


@router.get("")
async def list_conversations(
    user_id: UserId, m: Msg, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[ConversationOut]:
    """Your private chats, groups and their threads, most recently active first, each with
    its unread count."""
    listed = await conversations.list_for(m.db, user_id, limit)
    return [conversation_out(x.conversation, x.last_read_seq, x.role) for x in listed]


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, user_id: UserId, m: Msg) -> ConversationOut:
    view = await visible(m, conversation_id, user_id)
    row = await conversations.conversation_row(m.db, view.id)
    if row is None:
        raise Problem(404, "conversation not found")
    _, read = await conversations.unread_of(m.db, view.id, user_id)
    return conversation_out(row, read, view.role(user_id) if view.type != "thread" else None)


@router.get("/{conversation_id}/members")
async def list_members(conversation_id: str, user_id: UserId, m: Msg) -> list[MemberOut]:
    view = await visible(m, conversation_id, user_id)
    return [
        MemberOut(id=str(x.id), kind=x.kind, role=x.role)
        for x in sorted(view.members.values(), key=lambda x: x.id)
    ]


@router.post("/{conversation_id}/members", status_code=status.HTTP_201_CREATED)
async def add_members(
    conversation_id: str, body: MembersIn, user_id: UserId, m: Msg
) -> list[MemberOut]:
    """Add users (or your own agents) to a group; owner or admin only. Returns those added
    (members already in are skipped)."""
    view = await visible(m, conversation_id, user_id)
    try:
        added = await conversations.add_members(
            m.db, m.cache, view, user_id, _ids(body.members), body.role, m.knobs.max_group_members
        )
    except MessagingError as exc:
        raise problem(exc) from None
    return [MemberOut(id=str(x.id), kind=x.kind, role=x.role) for x in added]


@router.patch("/{conversation_id}/members/{member_id}")
async def change_role(
    conversation_id: str, member_id: str, body: RoleIn, user_id: UserId, m: Msg
) -> MemberOut:
    """Owner only. Making someone owner hands the group over (you become an admin)."""
    view = await visible(m, conversation_id, user_id)
    try:
        member = await conversations.set_role(
            m.db, m.cache, view, user_id, parse_id(member_id, "member"), body.role
        )
    except MessagingError as exc:
        raise problem(exc) from None
    return MemberOut(id=str(member.id), kind=member.kind, role=member.role)


@router.delete("/{conversation_id}/members/{member_id}", status_code=204)
async def remove_member(conversation_id: str, member_id: str, user_id: UserId, m: Msg) -> Response:
    """Remove a member (owner/admin), or leave (your own id)."""
    view = await visible(m, conversation_id, user_id)
    try:
        await conversations.remove_member(
            m.db, m.cache, view, user_id, parse_id(member_id, "member")
        )
    except MessagingError as exc:
        raise problem(exc) from None
    return Response(status_code=204)


@router.post("/{conversation_id}/threads", status_code=status.HTTP_201_CREATED)
async def open_thread(
    conversation_id: str, body: ThreadIn, user_id: UserId, m: Msg
) -> ConversationOut:
    """A topic under a group, with its own message sequence; every group member is in it."""
    view = await visible(m, conversation_id, user_id)
    try:
        thread = await conversations.create_thread(m.db, view, user_id, body.title)
    except MessagingError as exc:
        raise problem(exc) from None
    return conversation_out(thread)


@router.get("/{conversation_id}/threads")
async def list_threads(conversation_id: str, user_id: UserId, m: Msg) -> list[ConversationOut]:
    view = await visible(m, conversation_id, user_id)
    return [conversation_out(t) for t in await conversations.threads_of(m.db, view.id)]


# -- messages -----------------------------------------------------------------------------------


@router.post("/{conversation_id}/messages", status_code=status.HTTP_201_CREATED)
async def send_message(
    conversation_id: str, body: MessageIn, user_id: UserId, m: Msg, res: Res
) -> ConversationMessageOut:
    """Stored once (per `client_msg_id`), then in every member's inbox. Answered once the
    message is durable: fanned out, or handed to the fan-out workflow."""
    view = await visible(m, conversation_id, user_id)
    try:
        message = await post_message(res, m, view, user_id, body.content, body.client_msg_id)
    except MessagingError as exc:
        raise problem(exc) from None
    return message_out(message)


@router.get("/{conversation_id}/messages")
async def list_messages(
    conversation_id: str,
    user_id: UserId,
    m: Msg,
    before_seq: Annotated[int | None, Query(ge=1, description="returns older messages")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ConversationMessagePage:
    """Newest first; pass `next_before_seq` back as `before_seq` for the previous page."""
    view = await visible(m, conversation_id, user_id)
    items = await m.store.page(view.id, before_seq, limit)
    more = len(items) == limit and items[-1].seq > 1
    return ConversationMessagePage(
        items=[message_out(x) for x in items], next_before_seq=items[-1].seq if more else None
    )


@router.post("/{conversation_id}/read")
async def mark_read(conversation_id: str, body: ReadIn, user_id: UserId, m: Msg) -> ReadOut:
    """Move your read marker forward (it never moves back); unread = last seq − marker."""
    view = await visible(m, conversation_id, user_id)
    marker = await m.mark_read(view, user_id, body.seq)
    last, _ = await conversations.unread_of(m.db, view.id, user_id)
    return ReadOut(conversation_id=str(view.id), last_read_seq=marker, unread=max(0, last - marker))


# -- sending, shared with the WebSocket ---------------------------------------------------------


async def post_message(
    res: Res, m: Messenger, view: View, user_id: int, content: str, client_msg_id: str | None
) -> ChatMessage:
    sent = await m.append(
        view,
        user_id,
        content,
        client_msg_id or f"srv-{uuid.uuid4().hex}",
        fan_out=not might_run_agents(view, content),
    )
    if sent.pending:
        await complete_send(res, m, view, sent.message)
    return sent.message


async def complete_send(res: Res, m: Messenger, view: View, message: ChatMessage) -> None:
    """Agents first, fan-out last: the ledger says `pending` until the fan-out is done, so a
    crash anywhere here is resumed — by a resend, or by the recovery loop — and every step is
    idempotent. A send stays accepted while Temporal is away: recovery retries it."""
    try:
        if message.sender_type == "user":
            await run_agents(res, m, view, message)
        await m.fan_out(view, message)
    except (RPCError, Problem) as exc:
        if isinstance(exc, Problem) and exc.status != 503:
            raise
        log.warning("send stored; fan-out resumes when Temporal is back", message=message.id)


# -- agents in conversations --------------------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"\s+", "-", name.strip().lower())


def might_run_agents(view: View, content: str) -> bool:
    """Whether `agents_to_run` could find any (without its lookups): a private chat with an
    agent, or an `@mention`."""
    return bool(view.agent_ids()) if view.type == "private" else MENTION.search(content) is not None


async def agents_to_run(m: Messenger, view: View, message: ChatMessage) -> list[int]:
    """A private chat with an agent runs it on every message; elsewhere `@name` runs the
    agent of that name among the members (the group's, for a thread), else one of the
    sender's own agents."""
    agent_members = view.agent_ids()
    if view.type == "private":
        return agent_members
    wanted = {_norm(name) for name in MENTION.findall(message.content)}
    if not wanted:
        return []
    chosen: list[int] = []
    for agent_id in agent_members:
        config = await conversations.agent_config(m.db, m.cache, agent_id)
        if config is not None and _norm(config["name"]) in wanted:
            wanted.discard(_norm(config["name"]))
            chosen.append(agent_id)
    if wanted:
        async with m.db() as db:
            own = (
                await db.execute(select(Agent).where(Agent.owner_id == message.sender_id))
            ).scalars()
            for agent in own:
                if _norm(agent.name) in wanted:
                    wanted.discard(_norm(agent.name))
                    chosen.append(agent.id)
    return chosen


async def run_agents(res: Res, m: Messenger, view: View, message: ChatMessage) -> None:
    agents = await agents_to_run(m, view, message)
    if not agents:
        return
    names = await conversations.usernames(m.db, [message.sender_id])
    for agent_id in agents:
        await run_agent(res, m, view, message, agent_id, names.get(message.sender_id, "someone"))


async def run_agent(
    res: Res, m: Messenger, view: View, message: ChatMessage, agent_id: int, sender_name: str
) -> None:
    """Hand the message to the conversation's session of this agent (the same path as
    `POST /chat/send`), and start the relay that streams the turn to the members and posts
    the reply. Idempotent per message: a resend or recovery re-offers the same turn."""
    async with res.db() as db:
        agent = await db.get(Agent, agent_id)
        if agent is None:
            return
        session = await _agent_session(res, view, agent)
        key = f"conv:{message.id}"
        turn_message = await session_store.message_by_client_id(db, session.id, key)
        after = "0-0"
        if turn_message is None:
            after = await res.bus.last_id(session.id)
            text = message.content
            if view.type != "private":  # the agent should know who is talking
                text = f"{sender_name}: {text}"
            turn_message = Message(
                id=new_id(),
                session_id=session.id,
                role="user",
                content=text,
                turn_id=new_id(),
                client_msg_id=key,
            )
            db.add(turn_message)
            try:
                await db.commit()
            except IntegrityError:
                await db.rollback()
                turn_message = await session_store.message_by_client_id(db, session.id, key)
                assert turn_message is not None
                after = "0-0"
    try:
        await deliver(res, session, agent, turn_message)
    except Problem as exc:
        if exc.status != 409:
            raise
        log.info("agent turn refused", agent=agent.id, conversation=view.id, reason=exc.detail)
        return
    await res.temporal.start_workflow(
        RELAY_WORKFLOW,
        RelayInput(
            conversation_id=str(view.id),
            agent_id=str(agent.id),
            session_id=str(session.id),
            turn_id=str(turn_message.turn_id),
            after=after,
            batch_size=m.knobs.fanout_batch_size,
            parallelism=m.knobs.fanout_parallelism,
        ),
        id=relay_workflow_id(turn_message.turn_id),
        task_queue=MESSAGES_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"agent {agent.name} in conversation {view.id}",
    )


async def _agent_session(res: Res, view: View, agent: Agent) -> Session:
    """The one session of this agent in this conversation, made (with its workflow) on first
    use. It belongs to the agent's owner, like any session of that agent."""
    async with res.db() as db:
        link = await db.get(ConversationAgent, (view.id, agent.id))
        if link is not None:
            session = await db.get(Session, link.session_id)
            if session is not None:
                return session
        session_id = new_id()
        session = Session(
            id=session_id,
            user_id=agent.owner_id,
            agent_id=agent.id,
            title=f"{view.type} {view.id}",
            workflow_id=session_workflow_id(session_id),
        )
        db.add(session)
        db.add(ConversationAgent(conversation_id=view.id, agent_id=agent.id, session_id=session_id))
        try:
            await db.flush()
        except IntegrityError:  # another send made it first
            await db.rollback()
            link = await db.get(ConversationAgent, (view.id, agent.id))
            assert link is not None
            found = await db.get(Session, link.session_id)
            assert found is not None
            return found
        handle = await res.temporal.start_workflow(
            "AgentSession",
            SessionInput(
                session_id=str(session_id),
                agent_id=str(agent.id),
                user_id=str(agent.owner_id),
                options=turn_options(res.settings),
            ),
            id=session.workflow_id,
            task_queue=AGENTS_QUEUE,
            search_attributes=temporal.session_search_attributes(
                session_id, agent.id, agent.owner_id
            ),
            static_summary=f"agent {agent.name} — {view.type} {view.id}",
        )
        try:
            await db.commit()
        except IntegrityError:
            await db.rollback()
            await handle.terminate("another process opened this conversation's session first")
            link = await db.get(ConversationAgent, (view.id, agent.id))
            assert link is not None
            found = await db.get(Session, link.session_id)
            assert found is not None
            return found
        return session
