"""The message store's interface (`MessageStore`): what every implementation does, and the
parts they share, which go straight to the SQL ledger (`chatee.messaging.ledger`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from chatee.messaging import ledger
from chatee.messaging.types import (
    DELETED,
    EDITED,
    MESSAGE,
    REACTION,
    Change,
    ChatMessage,
    Draft,
    InboxItem,
    InboxRef,
    Item,
)
from chatee.models import utcnow


class MessageStore(ABC):
    """Messages of conversations and the per-user inboxes that reference them."""

    def __init__(self, db: ledger.Factory) -> None:
        self.db = db

    @abstractmethod
    async def append(self, draft: Draft) -> tuple[ChatMessage, bool]:
        """Store a message once per (conversation, sender, client_msg_id) with the next `seq`.
        Returns it and whether this call created it (False: a resend got the first one)."""

    @abstractmethod
    async def get(self, message_id: int) -> ChatMessage | None: ...

    @abstractmethod
    async def page(
        self, conversation_id: int, before_seq: int | None, limit: int
    ) -> list[ChatMessage]:
        """Newest first, `seq` strictly below `before_seq`."""

    @abstractmethod
    async def deliver(
        self,
        message: ChatMessage,
        user_ids: Sequence[int],
        finish: bool = False,
        before: Earlier = (),
    ) -> list[InboxItem]:
        """One inbox entry per user (idempotent). Returns every user's entry for the message,
        whether this call or an earlier one made it, after the new entries of what `before`
        holds: earlier items of the conversation, each with the users to get it first, in the
        same write (see `ledger.deliver`). `finish`: the last batch of the message's fan-out —
        it is marked done in the same transaction."""

    async def append_delivered(
        self, draft: Draft, user_ids: Sequence[int], status: str = "done"
    ) -> tuple[ChatMessage, bool, list[InboxItem]]:
        """`append`, then `deliver(…, finish=True)`: the message, whether this call created
        it, and its inbox entries (none for a resend). Stores whose ledger write can hold
        both do them as one transaction; this default takes two steps (a crash between them
        leaves the message `pending`, which recovery finishes). `status="pending"`: work
        remains after the delivery (an agent hand-off), so the message is left `pending`."""
        message, created = await self.append(draft)
        if not created:
            return message, False, []
        items = await self.deliver(message, user_ids, finish=status == "done")
        return message, True, items

    @abstractmethod
    async def inbox(self, user_id: int, after: int, limit: int) -> list[InboxItem]:
        """The user's entries with `inbox_seq > after`, ascending and contiguous."""

    # -- changes (edits, deletions, reactions, membership) -----------------------------------

    keeps_content = True  # the ledger row holds the body (the SQL store)

    async def body_changed(self, message: ChatMessage) -> None:  # noqa: B027 - a hook
        """Called inside the change's transaction, before it commits: a store that keeps
        bodies elsewhere writes the edited body (or the tombstone) there."""

    async def record(
        self,
        template: Change,
        mutate: ledger.Mutation,
        users: Sequence[int] | None,
        message: ChatMessage | None = None,
    ) -> tuple[Change | None, list[InboxItem]]:
        """Record a change (see `ledger.record_change`); `message`: the message as the change
        leaves it, written by `body_changed` before the commit. Returns the change with its
        message, and the inbox entries made (`users` given: all of them, done at once)."""

        async def before_commit(change: Change) -> None:
            if message is not None:
                await self.body_changed(message)

        hook = before_commit if message is not None and not self.keeps_content else None
        change, refs = await ledger.record_change(self.db, template, mutate, users, hook)
        if change is None:
            return None, []
        change = change.with_message(message)
        await self._put_change_refs(refs)
        return change, [InboxItem(r.user_id, r.inbox_seq, None, change) for r in _by_user(refs)]

    async def write_in_place(self, message: ChatMessage) -> bool:
        """The message's text and meta as they are now, kept in its place with no inbox entry
        (a streaming agent reply's text so far, read by whoever loads it mid-reply). False:
        it was deleted meanwhile, and stays a tombstone."""

        async def write_body() -> None:
            await self.body_changed(message)

        return await ledger.write_in_place(
            self.db,
            message.id,
            message.meta,
            message.content if self.keeps_content else None,
            None if self.keeps_content else write_body,
        )

    async def edit(
        self, message: ChatMessage, content: str, users: Sequence[int] | None
    ) -> tuple[Change | None, list[InboxItem]]:
        now = utcnow().replace(microsecond=0)
        edited = replace(message, content=content, edited_at=now)
        mutate = ledger.edit_mutation(message.id, content if self.keeps_content else None, now)
        return await self.record(_about(message, EDITED, message.sender_id), mutate, users, edited)

    async def delete(
        self, message: ChatMessage, actor_id: int, users: Sequence[int] | None
    ) -> tuple[Change | None, list[InboxItem]]:
        now = utcnow().replace(microsecond=0)
        tombstone = replace(message, content="", deleted=True, meta=None)
        mutate = ledger.delete_mutation(message.id, actor_id, now)
        return await self.record(_about(message, DELETED, actor_id), mutate, users, tombstone)

    async def react(
        self,
        message: ChatMessage,
        user_id: int,
        emoji: str,
        add: bool,
        max_kinds: int,
        users: Sequence[int] | None,
    ) -> tuple[Change | None, list[InboxItem]]:
        mutate = ledger.reaction_mutation(message.id, user_id, emoji, add, max_kinds)
        return await self.record(_about(message, REACTION, user_id), mutate, users)

    async def deliver_change(
        self, change: Change, user_ids: Sequence[int], finish: bool = False, before: Earlier = ()
    ) -> list[InboxItem]:
        """`deliver` for a change: every user's entry for it (idempotent)."""
        done = await ledger.deliver(self.db, change.item, user_ids, finish, refs_of(before))
        refs = _by_user(done.fresh + done.existing)
        await self._put_change_refs(done.earlier + refs)
        own = [InboxItem(r.user_id, r.inbox_seq, None, change) for r in refs]
        return earlier_items(done.earlier, before) + own

    async def _put_change_refs(self, refs: list[InboxRef]) -> None:  # noqa: B027 - a hook
        """A store that keeps inbox timelines elsewhere writes these entries there too."""

    async def get_change(self, change_id: int) -> Change | None:
        """The change, with its message as it is now (for edits and deletions)."""
        change = (await ledger.change_rows(self.db, [change_id])).get(change_id)
        if change is None or change.kind not in (EDITED, DELETED):
            return change
        return change.with_message(await self.get(change.message_id))

    async def pending_changes(self, older_than: datetime, limit: int = 100) -> list[int]:
        return await ledger.pending_changes(self.db, older_than, limit)

    async def mark_change_done(self, change_id: int) -> None:
        await ledger.mark_fanned_out(self.db, change_id, "change")

    async def inbox_heads(self, user_ids: Sequence[int]) -> dict[int, int]:
        return await ledger.inbox_heads(self.db, user_ids)

    async def mark_fanned_out(self, message_id: int) -> None:
        await ledger.mark_fanned_out(self.db, message_id)

    async def pending_fanouts(self, older_than: datetime, limit: int = 100) -> list[int]:
        return await ledger.pending_fanouts(self.db, older_than, limit)

    async def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections the store holds of its own (the SQL engine is not its own)."""


def _about(message: ChatMessage, kind: str, actor_id: int) -> Change:
    """The template of a change to `message` (the ledger gives it an id, a time and data)."""
    return Change(
        id=0,
        conversation_id=message.conversation_id,
        kind=kind,
        actor_id=actor_id,
        created_at=message.created_at,
        message_id=message.id,
        seq=message.seq,
    )


def _by_user(refs: list[InboxRef]) -> list[InboxRef]:
    return sorted(refs, key=lambda r: r.user_id)


Earlier = Sequence[tuple[ChatMessage | Change, Sequence[int]]]  # what goes first, and to whom


def refs_of(before: Earlier) -> list[tuple[Item, Sequence[int]]]:
    return [(body.item, users) for body, users in before]


def earlier_items(refs: list[InboxRef], before: Earlier) -> list[InboxItem]:
    """The new entries of `before`'s items, with their bodies, in the order they were made."""
    bodies = {(b.item.message_id, b.item.change_id): b for b, _ in before}
    items = []
    for ref in refs:
        body = bodies[(ref.message_id, ref.change_id)]
        if isinstance(body, Change):
            items.append(InboxItem(ref.user_id, ref.inbox_seq, None, body))
        else:
            items.append(InboxItem(ref.user_id, ref.inbox_seq, body))
    return items


def change_item(
    ref: InboxRef, changes: dict[int, Change], messages: dict[int, ChatMessage]
) -> InboxItem | None:
    """An inbox entry from its ref and what it points at (None: that is missing)."""
    if ref.kind == MESSAGE:
        message = messages.get(ref.message_id)
        return InboxItem(ref.user_id, ref.inbox_seq, message) if message is not None else None
    change = changes.get(ref.change_id)
    if change is None:
        return None
    if change.kind in (EDITED, DELETED):
        change = change.with_message(messages.get(change.message_id))
    return InboxItem(ref.user_id, ref.inbox_seq, None, change)
