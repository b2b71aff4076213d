"""The SQL message store: bodies live in the ledger rows themselves (`conversation_messages`),
inbox timelines in `inbox_entries` — one database, one transaction per append or delivery."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from chatee.messaging import ledger
from chatee.messaging.stores.base import Earlier, MessageStore, earlier_items, refs_of
from chatee.messaging.types import DELETED, EDITED, MESSAGE, ChatMessage, Draft, InboxItem, InboxRef
from chatee.models import ConversationMessage, InboxEntry, MessageChange


class SqlMessageStore(MessageStore):
    async def append(self, draft: Draft) -> tuple[ChatMessage, bool]:
        return await ledger.append(self.db, draft, keep_content=True)

    async def get(self, message_id: int) -> ChatMessage | None:
        row = await ledger.message_row(self.db, message_id)
        return ledger.row_message(row) if row is not None else None

    async def page(
        self, conversation_id: int, before_seq: int | None, limit: int
    ) -> list[ChatMessage]:
        stmt = select(ConversationMessage).where(
            ConversationMessage.conversation_id == conversation_id
        )
        if before_seq is not None:
            stmt = stmt.where(ConversationMessage.seq < before_seq)
        stmt = stmt.order_by(ConversationMessage.seq.desc()).limit(limit)
        async with self.db() as db:
            return [ledger.row_message(r) for r in (await db.execute(stmt)).scalars()]

    async def append_delivered(
        self, draft: Draft, user_ids: Sequence[int], status: str = "done"
    ) -> tuple[ChatMessage, bool, list[InboxItem]]:
        message, created, refs = await ledger.append_delivered(self.db, draft, user_ids, status)
        return message, created, [_item(r, message) for r in sorted(refs, key=lambda r: r.user_id)]

    async def deliver(
        self,
        message: ChatMessage,
        user_ids: Sequence[int],
        finish: bool = False,
        before: Earlier = (),
    ) -> list[InboxItem]:
        done = await ledger.deliver(self.db, message, user_ids, finish, refs_of(before))
        own = sorted(done.fresh + done.existing, key=lambda r: r.user_id)
        return earlier_items(done.earlier, before) + [_item(r, message) for r in own]

    async def inbox(self, user_id: int, after: int, limit: int) -> list[InboxItem]:
        """One query: each entry with the message and the change it points at."""
        stmt = (
            select(InboxEntry, ConversationMessage, MessageChange)
            .outerjoin(ConversationMessage, ConversationMessage.id == InboxEntry.message_id)
            .outerjoin(MessageChange, MessageChange.id == InboxEntry.change_id)
            .where(InboxEntry.user_id == user_id, InboxEntry.inbox_seq > after)
            .order_by(InboxEntry.inbox_seq)
            .limit(limit)
        )
        async with self.db() as db:
            rows = (await db.execute(stmt)).all()
        items = []
        for entry, message_row, change_row in rows:
            message = ledger.row_message(message_row) if message_row is not None else None
            if entry.kind == MESSAGE:
                if message is None:
                    break  # never expected: a message row is never removed
                items.append(InboxItem(entry.user_id, entry.inbox_seq, message))
                continue
            if change_row is None:
                break
            change = ledger.row_change(change_row)
            if change.kind in (EDITED, DELETED):
                change = change.with_message(message)
            items.append(InboxItem(entry.user_id, entry.inbox_seq, None, change))
        return items


def _item(ref: InboxRef, message: ChatMessage) -> InboxItem:
    return InboxItem(ref.user_id, ref.inbox_seq, message)
