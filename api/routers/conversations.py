"""Conversations between people (and agents): private chats, groups, threads, messages.

A conversation you are not in is a 404, exactly like one that does not exist. Sending is
`chatee.messaging.sending.send_message`, shared with the WebSocket's `message.send`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Msg, Svc, UserId, parse_id
from chatee.errors import Invalid
from chatee.messaging import changes, conversations, sending
from chatee.messaging.conversations import Member, View
from chatee.messaging.service import Messenger
from chatee.messaging.types import ChatMessage
from chatee.models import Conversation
from chatee.timefmt import Timestamp

router = APIRouter(prefix="/conversations", tags=["conversations"])


async def visible(m: Messenger, raw_id: str, user_id: int) -> View:
    return await m.view(parse_id(raw_id, "conversation"), user_id)


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
    created_at: Timestamp
    last_message_at: Timestamp | None


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    members: list[str] = Field(min_length=1, max_length=10_000)
    role: Literal["admin", "member"] = "member"


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["owner", "admin", "member"]


class MemberOut(BaseModel):
    id: str
    kind: str = Field(description="user or agent")
    role: str
    name: str = Field(description="a user's display name, an agent's name")


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=255)


class ThreadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=255)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1)
    client_msg_id: str | None = Field(
        None, min_length=1, max_length=128, description="makes the send idempotent"
    )


class ReactionOut(BaseModel):
    emoji: str
    count: int
    me: bool = Field(description="whether you reacted with this emoji")


class ConversationMessageOut(BaseModel):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    sender_type: str
    sender_name: str | None = Field(description="a user's display name, an agent's name")
    content: str = Field(description="empty once deleted")
    client_msg_id: str
    created_at: str = Field(description="RFC 3339 UTC, milliseconds")
    edited_at: str | None = None
    deleted: bool = False
    reactions: list[ReactionOut] = Field(default_factory=list)
    meta: dict[str, Any] | None = None


class EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1)


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
            raise Invalid(f"members: {value!r} is not an id")
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
    if body.type == "private":
        others = [i for i in ids if i != user_id]
        if len(others) != 1:
            raise Invalid("a private chat has exactly one other member", "bad-members")
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
        raise conversations.not_found()
    _, read = await conversations.unread_of(m.db, view.id, user_id)
    return conversation_out(row, read, view.role(user_id) if view.type != "thread" else None)


@router.patch("/{conversation_id}")
async def rename_conversation(
    conversation_id: str, body: ConversationPatch, user_id: UserId, m: Msg, svc: Svc
) -> ConversationOut:
    """Retitle a group or thread: the group's owner or an admin."""
    view = await visible(m, conversation_id, user_id)
    row = await changes.rename_conversation(svc, view, user_id, body.title)
    _, read = await conversations.unread_of(m.db, view.id, user_id)
    return conversation_out(row, read, view.role(user_id) if view.type != "thread" else None)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, user_id: UserId, m: Msg, svc: Svc) -> Response:
    """Delete a group (with its threads) or a thread: the group's owner only."""
    view = await visible(m, conversation_id, user_id)
    await changes.delete_conversation(svc, view, user_id)
    return Response(status_code=204)


async def members_out(m: Messenger, members: list[Member]) -> list[MemberOut]:
    names = await conversations.member_names(m.db, members)
    return [MemberOut(id=str(x.id), kind=x.kind, role=x.role, name=names[x.id]) for x in members]


@router.get("/{conversation_id}/members")
async def list_members(conversation_id: str, user_id: UserId, m: Msg) -> list[MemberOut]:
    """Everyone in the conversation — people and agents — with their names."""
    view = await visible(m, conversation_id, user_id)
    return await members_out(m, sorted(view.members.values(), key=lambda x: x.id))


@router.post("/{conversation_id}/members", status_code=status.HTTP_201_CREATED)
async def add_members(
    conversation_id: str, body: MembersIn, user_id: UserId, m: Msg, svc: Svc
) -> list[MemberOut]:
    """Add users (or your own agents) to a group; owner or admin only. Returns those added
    (members already in are skipped)."""
    view = await visible(m, conversation_id, user_id)
    added = await changes.add_members(svc, view, user_id, _ids(body.members), body.role)
    return await members_out(m, added)


@router.patch("/{conversation_id}/members/{member_id}")
async def change_role(
    conversation_id: str, member_id: str, body: RoleIn, user_id: UserId, m: Msg, svc: Svc
) -> MemberOut:
    """Owner only. Making someone owner hands the group over (you become an admin)."""
    view = await visible(m, conversation_id, user_id)
    member = await changes.set_role(svc, view, user_id, parse_id(member_id, "member"), body.role)
    return (await members_out(m, [member]))[0]


@router.delete("/{conversation_id}/members/{member_id}", status_code=204)
async def remove_member(
    conversation_id: str, member_id: str, user_id: UserId, m: Msg, svc: Svc
) -> Response:
    """Remove a member (owner/admin), or leave (your own id)."""
    view = await visible(m, conversation_id, user_id)
    await changes.remove_member(svc, view, user_id, parse_id(member_id, "member"))
    return Response(status_code=204)


@router.post("/{conversation_id}/threads", status_code=status.HTTP_201_CREATED)
async def open_thread(
    conversation_id: str, body: ThreadIn, user_id: UserId, m: Msg
) -> ConversationOut:
    """A topic under a group, with its own message sequence; every group member is in it."""
    view = await visible(m, conversation_id, user_id)
    thread = await conversations.create_thread(m.db, view, user_id, body.title)
    return conversation_out(thread)


@router.get("/{conversation_id}/threads")
async def list_threads(conversation_id: str, user_id: UserId, m: Msg) -> list[ConversationOut]:
    view = await visible(m, conversation_id, user_id)
    return [conversation_out(t) for t in await conversations.threads_of(m.db, view.id)]


# -- messages -----------------------------------------------------------------------------------


@router.post("/{conversation_id}/messages", status_code=status.HTTP_201_CREATED)
async def send_message(
    conversation_id: str, body: MessageIn, user_id: UserId, m: Msg, svc: Svc
) -> ConversationMessageOut:
    """Stored once (per `client_msg_id`), then in every member's inbox. Answered once the
    message is durable: fanned out, or handed to the fan-out workflow."""
    view = await visible(m, conversation_id, user_id)
    message = await sending.send_message(svc, view, user_id, body.content, body.client_msg_id)
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
    page = await m.store.page(view.id, before_seq, limit)
    items = await m.with_reactions(await m.named(page), user_id)
    more = len(items) == limit and items[-1].seq > 1
    return ConversationMessagePage(
        items=[message_out(x) for x in items], next_before_seq=items[-1].seq if more else None
    )


def _message_id(raw: str) -> int:
    return parse_id(raw, "message")


@router.patch("/{conversation_id}/messages/{message_id}")
async def edit_message(
    conversation_id: str, message_id: str, body: EditIn, user_id: UserId, m: Msg, svc: Svc
) -> ConversationMessageOut:
    """The sender changes the text; the message keeps its place and `seq`, gets `edited_at`,
    and every member gets a `message.edited` inbox entry."""
    view = await visible(m, conversation_id, user_id)
    message = await changes.edit_message(svc, view, user_id, _message_id(message_id), body.content)
    return message_out(message)


@router.delete("/{conversation_id}/messages/{message_id}")
async def delete_message(
    conversation_id: str, message_id: str, user_id: UserId, m: Msg, svc: Svc
) -> ConversationMessageOut:
    """The sender, or a group's owner or admin: the message becomes a tombstone (`deleted`,
    no content) in its place; every member gets a `message.deleted` inbox entry."""
    view = await visible(m, conversation_id, user_id)
    message = await changes.delete_message(svc, view, user_id, _message_id(message_id))
    return message_out(message)


@router.put("/{conversation_id}/messages/{message_id}/reactions/{emoji}")
async def add_reaction(
    conversation_id: str, message_id: str, emoji: str, user_id: UserId, m: Msg, svc: Svc
) -> ConversationMessageOut:
    """React with one emoji (URL-encoded); again changes nothing. → the message, its
    `reactions` as you see them."""
    view = await visible(m, conversation_id, user_id)
    message = await changes.react(svc, view, user_id, _message_id(message_id), emoji, True)
    return message_out(message)


@router.delete("/{conversation_id}/messages/{message_id}/reactions/{emoji}")
async def remove_reaction(
    conversation_id: str, message_id: str, emoji: str, user_id: UserId, m: Msg, svc: Svc
) -> ConversationMessageOut:
    """Take your reaction back."""
    view = await visible(m, conversation_id, user_id)
    message = await changes.react(svc, view, user_id, _message_id(message_id), emoji, False)
    return message_out(message)


@router.post("/{conversation_id}/read")
async def mark_read(conversation_id: str, body: ReadIn, user_id: UserId, m: Msg) -> ReadOut:
    """Move your read marker forward (it never moves back); unread = last seq − marker."""
    view = await visible(m, conversation_id, user_id)
    marker = await m.mark_read(view, user_id, body.seq)
    last, _ = await conversations.unread_of(m.db, view.id, user_id)
    return ReadOut(conversation_id=str(view.id), last_read_seq=marker, unread=max(0, last - marker))
