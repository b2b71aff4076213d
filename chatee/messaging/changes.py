"""Changing what was said — edits, deletions and reactions — and the conversation itself —
its members, its title, its end: the use cases REST (and any other surface) calls.

Each change is recorded once in the ledger and reaches every member as an inbox entry of its
own (`chatee.messaging.ledger.record_change`), pushed live and returned by `/sync`, so a device
catches up on changes through the same cursor as on messages. The change itself (the edited
text, a new member…) is written in the transaction that records it, so no one ever sees one
without the other.

The rules are a chat user's: only the sender edits (a person's message, not an agent's); the
sender, or the group's owner or an admin, deletes; a deleted message is a tombstone that keeps
its place and `seq`; a reaction is one per person and emoji, counted per message, at most
`messaging.max_reaction_kinds` different emoji on one message, and a person's reaction changes
are rate-limited. Who may change the conversation itself is `chatee.messaging.conversations`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import regex
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from chatee.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unavailable
from chatee.logging import get_logger
from chatee.messaging import agents, conversations, ledger
from chatee.messaging.conversations import Edit, Member, View
from chatee.messaging.names import names_of
from chatee.messaging.types import GONE, MEMBER, RENAMED, Change, ChatMessage, InboxItem
from chatee.models import utcnow
from chatee.services import Services

log = get_logger(__name__)

MAX_EMOJI_BYTES = 64  # the longest emoji (a tagged flag, a family) take 25–28
# what an emoji is made of: pictographs, flags, keycaps, skin tones, joiners, selectors, tags
_EMOJI_PARTS = regex.compile(
    r"(?:\p{Extended_Pictographic}|\p{Emoji_Component}|\p{Emoji_Modifier}|\u200d|\ufe0f"
    r"|\p{Regional_Indicator}|[\U000E0020-\U000E007F]|\u20e3)+"
)
_EMOJI_CORE = regex.compile(r"\p{Extended_Pictographic}|\p{Regional_Indicator}|\u20e3")


def valid_emoji(raw: str) -> str:
    """`raw` if it is one emoji (one grapheme cluster made of emoji code points), else 422."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_EMOJI_BYTES:
        raise Invalid(f"emoji: at most {MAX_EMOJI_BYTES} bytes", "bad-emoji", field="emoji")
    ok = (
        regex.fullmatch(r"\X", raw) is not None
        and _EMOJI_PARTS.fullmatch(raw) is not None
        and _EMOJI_CORE.search(raw) is not None
    )
    if not ok:
        raise Invalid("emoji: must be a single emoji, such as 👍", "bad-emoji", field="emoji")
    return raw


async def _message_in(svc: Services, view: View, message_id: int) -> ChatMessage:
    message = await svc.messenger.store.get(message_id)
    if message is None or message.conversation_id != view.id:
        raise NotFound("message not found")
    return message


async def _rendered(svc: Services, message: ChatMessage, viewer: int) -> ChatMessage:
    m = svc.messenger
    return (await m.with_reactions(await m.named([message]), viewer))[0]


async def _apply(
    svc: Services, view: View, record: object, extra_users: tuple[int, ...] = ()
) -> Change | None:
    """Record a change (`record(users)`: the store call), then push it or fan it out. A large
    fan-out Temporal cannot start now stays `pending`: recovery finishes it."""
    m = svc.messenger
    users = sorted(set(view.user_ids()) | set(extra_users))
    inline = m.inline(users)
    change, items = await record(users if inline else None)  # type: ignore[operator]
    if change is None:
        return None
    try:
        await m.publish_change(view, change, items, inline)
    except (RPCError, Unavailable):
        log.warning("change stored; its fan-out resumes when Temporal is back", change=change.id)
    return change


async def edit_message(
    svc: Services, view: View, user_id: int, message_id: int, content: str
) -> ChatMessage:
    """The sender's new text; the message keeps its place, `edited_at` says when."""
    message = await _message_in(svc, view, message_id)
    if message.sender_type != "user" or message.sender_id != user_id:
        raise Forbidden("only the sender can edit a message", "not-sender")
    if message.deleted:
        raise Conflict("the message was deleted", "message-deleted")
    limit = svc.settings.limits.max_message_bytes
    if len(content.encode()) > limit:
        raise TooLarge(f"content is over the {limit}-byte limit")
    store = svc.messenger.store
    try:
        change = await _apply(svc, view, lambda users: store.edit(message, content, users))
    except ledger.MessageDeleted:
        raise Conflict("the message was deleted", "message-deleted") from None
    edited = change.message if change is not None and change.message is not None else message
    if change is not None:  # an agent still answering it answers the new text
        await agents.steer(svc, view, edited, deleted=False)
    return await _rendered(svc, edited, user_id)


async def delete_message(svc: Services, view: View, user_id: int, message_id: int) -> ChatMessage:
    """A tombstone (`deleted`, no content, no reactions) in the message's place. The sender
    may delete, and in a group its owner or an admin. Deleting a tombstone changes nothing."""
    message = await _message_in(svc, view, message_id)
    own = message.sender_type == "user" and message.sender_id == user_id
    moderator = view.type != "private" and view.role(user_id) in ("owner", "admin")
    if not (own or moderator):
        raise Forbidden("only the sender, or the group's owner or an admin, can delete it")
    if not message.deleted:
        store = svc.messenger.store
        change = await _apply(svc, view, lambda users: store.delete(message, user_id, users))
        if change is not None and change.message is not None:
            message = change.message
        else:
            message = await _message_in(svc, view, message_id)
        await agents.steer(svc, view, message, deleted=True)  # its agent turns stop
    return await _rendered(svc, message, user_id)


async def react(
    svc: Services, view: View, user_id: int, message_id: int, emoji: str, add: bool
) -> ChatMessage:
    """Add (`add`) or take back one's reaction; doing either twice changes nothing. Returns
    the message with its reactions as the caller sees them."""
    emoji = valid_emoji(emoji)
    knobs = svc.settings.messaging
    retry = await svc.limiter.hit("reactions", str(user_id), knobs.reactions_per_window)
    if retry is not None:
        raise RateLimited(f"too many reactions; retry in {retry} s", retry_after=retry)
    message = await _message_in(svc, view, message_id)
    if message.deleted:
        raise Conflict("the message was deleted", "message-deleted")
    store = svc.messenger.store

    def record(users: list[int] | None) -> object:
        return store.react(message, user_id, emoji, add, knobs.max_reaction_kinds, users)

    try:
        await _apply(svc, view, record)
    except ledger.MessageDeleted:
        raise Conflict("the message was deleted", "message-deleted") from None
    except ledger.TooManyReactions:
        raise Conflict(
            f"a message has at most {knobs.max_reaction_kinds} different reactions",
            "too-many-reactions",
        ) from None
    return await _rendered(svc, message, user_id)


# -- changes to the conversation itself: its members, its title, its end ------------------------

Plan = Callable[[View], Awaitable[Edit | None]]  # a change's rules, checked on a view


async def add_members(
    svc: Services, view: View, actor_id: int, member_ids: Sequence[int], role: str
) -> list[Member]:
    """Add users (or the actor's own agents) to a group, and tell everyone in it, the new
    members too: one `member` entry for the lot. Returns those added (none: all were in)."""
    m = svc.messenger

    async def plan(view: View) -> Edit | None:
        limit = m.knobs.max_group_members
        return await conversations.plan_add(m.db, view, actor_id, member_ids, role, limit)

    edit = await _change_members(svc, view, actor_id, "added", plan)
    return edit.members if edit is not None else []


async def set_role(svc: Services, view: View, actor_id: int, member_id: int, role: str) -> Member:
    """Give a member a new role (the owner; making someone owner hands the group over), and
    tell everyone in it."""

    async def plan(view: View) -> Edit:
        return conversations.plan_role(view, actor_id, member_id, role)

    edit = await _change_members(svc, view, actor_id, "role", plan)
    assert edit is not None
    return edit.members[0]


async def remove_member(svc: Services, view: View, actor_id: int, member_id: int) -> None:
    """Take a member out of a group (or leave it), and tell everyone in it and the one who
    is gone."""
    m = svc.messenger

    async def plan(view: View) -> Edit:
        return await conversations.plan_removal(m.db, view, actor_id, member_id)

    await _change_members(svc, view, actor_id, "removed", plan)


async def leave_groups(svc: Services, member_id: int) -> None:
    """Take a user or agent out of every group it is in, as if it left each (an owner hands
    the group over), and tell each group: an account being deleted."""
    m = svc.messenger
    for group_id in await conversations.groups_of(m.db, member_id):
        view = await conversations.load_view(m.db, m.cache, group_id)
        if view is not None and member_id in view.members:
            await remove_member(svc, view, member_id, member_id)


async def _change_members(
    svc: Services, view: View, actor_id: int, change: str, plan: Plan
) -> Edit | None:
    """`plan`'s change of members, told as a `member` entry: what happened (`change`) to
    whom (`members`, with their names and their roles after; None: no longer in it)."""
    m = svc.messenger

    async def data(edit: Edit) -> dict[str, Any]:
        about = [*edit.members, *([edit.new_owner] if edit.new_owner else [])]
        named = await names_of(m.db, m.cache, ((x.kind, x.id) for x in about))
        after = edit.after.members if edit.after is not None else {}

        def member(x: Member) -> dict[str, Any]:
            role = after[x.id].role if x.id in after else None
            return {"id": str(x.id), "kind": x.kind, "name": named[(x.kind, x.id)], "role": role}

        told: dict[str, Any] = {"change": change, "members": [member(x) for x in edit.members]}
        if edit.new_owner is not None:  # the group was handed over in the same change
            told["new_owner"] = member(edit.new_owner)
        return told

    return await _change(svc, view, actor_id, MEMBER, plan, data)


async def rename_conversation(svc: Services, view: View, actor_id: int, title: str) -> Any:
    """Retitle a group or thread (its owner or an admin), and put the new title in every
    member's inbox (`conversation.renamed`), so their other devices learn it through /sync."""
    m = svc.messenger

    async def plan(view: View) -> Edit:
        return conversations.plan_rename(view, actor_id, title)

    async def data(edit: Edit) -> dict[str, Any]:
        return {"id": str(view.id), "title": title}

    await _change(svc, view, actor_id, RENAMED, plan, data)
    row = await conversations.conversation_row(m.db, view.id)
    if row is None:  # deleted since
        raise conversations.not_found()
    return row


async def delete_conversation(svc: Services, view: View, actor_id: int) -> None:
    """Delete a group (with its threads) or a thread (its owner), and tell everyone who was in
    it (`conversation.deleted`)."""

    async def plan(view: View) -> Edit:
        edit = conversations.plan_deletion(view, actor_id)  # the rules, before anything ends
        await conversations.end_agent_sessions(svc, view)
        return edit

    async def data(edit: Edit) -> dict[str, Any]:
        return {"id": str(view.id)}

    await _change(svc, view, actor_id, GONE, plan, data)


async def _change(
    svc: Services,
    view: View,
    actor_id: int,
    kind: str,
    plan: Plan,
    data_of: Callable[[Edit], Awaitable[dict[str, Any]]],
) -> Edit | None:
    """A change to the conversation itself: `plan` checks its rules on `view`, then the
    change is written and recorded as `kind` (`data_of` says what it is), with everyone's
    inbox entry, in ONE transaction — all of it is committed or none. Changes of members
    commit one at a time; one that finds the members changed since its view was read is
    planned again on the conversation as it is now, so whom it is told to is exact. None:
    nothing to change."""
    m = svc.messenger
    for attempt in range(ledger.ATTEMPTS):
        edit = await plan(view)
        if edit is None:
            return None
        try:
            await _record(svc, edit, actor_id, kind, await data_of(edit))
            return edit
        except conversations.MembersChanged:
            log.info("the members changed meanwhile: planning again", conversation=view.id)
            await ledger.backoff(attempt)
            view = await conversations.reread_view(m.db, m.cache, view, actor_id)
    raise Conflict("the members keep changing; retry")


async def _record(
    svc: Services, edit: Edit, actor_id: int, kind: str, data: dict[str, Any]
) -> None:
    """`edit` written in the transaction that records it and puts it in the inbox of everyone
    in the conversation before or after (those no longer in it: `extra_users`); its cache
    entries dropped once that is committed, before anyone is told."""
    m = svc.messenger
    after = edit.after if edit.after is not None else replace(edit.before, members={})
    gone = tuple(sorted(set(edit.before.user_ids()) - set(after.user_ids())))
    template = Change(0, edit.before.id, kind, actor_id, utcnow(), extra_users=gone)

    async def write(db: AsyncSession) -> dict[str, Any]:
        await edit.write(db)
        return data

    mutate = ledger.Mutation(write)  # through the ORM only, on SQLite too

    async def record(users: list[int] | None) -> tuple[Change | None, list[InboxItem]]:
        recorded = await m.store.record(template, mutate, users)
        await m.cache.delete(*edit.keys)
        return recorded

    await _apply(svc, after, record, gone)


async def resume_change(svc: Services, change_id: int) -> None:
    """Finish the fan-out of a change whose process died before it was done."""
    m = svc.messenger
    change = await m.store.get_change(change_id)
    if change is None:
        return
    view = await conversations.load_view(m.db, m.cache, change.conversation_id)
    log.info("resuming an unfinished change", change=change_id)
    try:
        await m.fan_out_change(view, change)
    except (RPCError, Unavailable):
        log.warning("change fan-out resumes when Temporal is back", change=change_id)
