"""Changing what was said: edits, deletions and reactions — the use cases REST (and any other
surface) calls — and the membership changes members must hear of.

Each change is recorded once in the ledger and reaches every member as an inbox entry of its
own (`chatee.messaging.ledger.record_change`), pushed live and returned by `/sync`, so a device
catches up on changes through the same cursor as on messages. The rules are a chat user's:
only the sender edits (a person's message, not an agent's); the sender, or the group's owner or
an admin, deletes; a deleted message is a tombstone that keeps its place and `seq`; a reaction
is one per person and emoji, counted per message, at most `messaging.max_reaction_kinds`
different emoji on one message, and a person's reaction changes are rate-limited.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import regex
from temporalio.service import RPCError

from chatee.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unavailable
from chatee.logging import get_logger
from chatee.messaging import agents, conversations, ledger
from chatee.messaging.conversations import Member, View
from chatee.messaging.names import names_of
from chatee.messaging.types import GONE, MEMBER, RENAMED, Change, ChatMessage
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


async def members_changed(
    svc: Services, before: View, actor_id: int, change: str, members: list[Member]
) -> None:
    """Tell every member — and whoever just left — that `members` were `added`, `removed`
    or given a new `role`: one `member` inbox entry for the lot. Call it after the change is
    committed; `before` is the conversation as it was."""
    m = svc.messenger
    after = await conversations.load_view(m.db, m.cache, before.id)
    if not members:
        return
    named = await names_of(m.db, m.cache, ((x.kind, x.id) for x in members))
    data = {
        "change": change,
        "members": [
            {
                "id": str(x.id),
                "kind": x.kind,
                "name": named[(x.kind, x.id)],
                "role": after.members[x.id].role if after and x.id in after.members else None,
            }
            for x in members
        ],
    }
    await announce(svc, before, actor_id, MEMBER, data, after)


async def rename_conversation(svc: Services, view: View, actor_id: int, title: str) -> Any:
    """Retitle a group or thread (its owner or an admin), and put the new title in every
    member's inbox (`conversation.renamed`), so their other devices learn it through /sync."""
    m = svc.messenger
    row = await conversations.rename(m.db, m.cache, view, actor_id, title)
    await announce(svc, view, actor_id, RENAMED, {"id": str(view.id), "title": row.title})
    return row


async def delete_conversation(svc: Services, view: View, actor_id: int) -> None:
    """Delete a group (with its threads) or a thread (its owner), and tell everyone who was in
    it (`conversation.deleted`)."""
    await conversations.delete_conversation(svc, view, actor_id)
    await announce(svc, view, actor_id, GONE, {"id": str(view.id)})


async def announce(
    svc: Services,
    before: View,
    actor_id: int,
    kind: str,
    data: dict[str, Any],
    after: View | None = None,
) -> None:
    """A change to the conversation itself as one inbox entry for everyone in it before or
    after (`kind` `member`, or e.g. `conversation.renamed` / `conversation.deleted`; `data`
    is what it says). Call it once the change is committed; `before` is the conversation as
    it was (`after` as it is now, read again when not given; None once it is gone)."""
    m = svc.messenger
    if after is None:
        after = await conversations.load_view(m.db, m.cache, before.id)
    audience = after if after is not None else replace(before, members={})
    gone = tuple(sorted(set(before.user_ids()) - set(audience.user_ids())))
    template = Change(0, before.id, kind, actor_id, utcnow(), extra_users=gone)

    def record(users: list[int] | None) -> object:
        return m.store.record(template, ledger.fixed_data(data), users)

    await _apply(svc, audience, record, gone)


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
