"""The message store's interface (`MessageStore`): what every implementation does, and the
parts they share, which go straight to the SQL ledger (`chatee.messaging.ledger`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from chatee.messaging import ledger
from chatee.messaging.types import ChatMessage, Draft, InboxItem


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
        self, message: ChatMessage, user_ids: Sequence[int], finish: bool = False
    ) -> list[InboxItem]:
        """One inbox entry per user (idempotent). Returns every user's entry for the message,
        whether this call or an earlier one made it. `finish`: the last batch of the message's
        fan-out — it is marked done in the same transaction."""

    async def append_delivered(
        self, draft: Draft, user_ids: Sequence[int]
    ) -> tuple[ChatMessage, bool, list[InboxItem]]:
        """`append`, then `deliver(…, finish=True)`: the message, whether this call created
        it, and its inbox entries (none for a resend). Stores whose ledger write can hold
        both do them as one transaction; this default takes two steps (a crash between them
        leaves the message `pending`, which recovery finishes)."""
        message, created = await self.append(draft)
        if not created:
            return message, False, []
        return message, True, await self.deliver(message, user_ids, finish=True)

    @abstractmethod
    async def inbox(self, user_id: int, after: int, limit: int) -> list[InboxItem]:
        """The user's entries with `inbox_seq > after`, ascending and contiguous."""

    async def inbox_heads(self, user_ids: Sequence[int]) -> dict[int, int]:
        return await ledger.inbox_heads(self.db, user_ids)

    async def mark_fanned_out(self, message_id: int) -> None:
        await ledger.mark_fanned_out(self.db, message_id)

    async def pending_fanouts(self, older_than: datetime, limit: int = 100) -> list[int]:
        return await ledger.pending_fanouts(self.db, older_than, limit)

    async def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections the store holds of its own (the SQL engine is not its own)."""
