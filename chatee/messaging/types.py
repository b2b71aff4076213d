"""What the message store hands out: messages and inbox items, with their JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Draft:
    """A message about to be appended. `client_msg_id` makes the append idempotent per sender."""

    conversation_id: int
    sender_id: int
    content: str
    client_msg_id: str
    sender_type: str = "user"  # user | agent
    meta: dict[str, Any] | None = None

    def stored(self, message_id: int, seq: int, created_at: datetime) -> ChatMessage:
        """The message this draft became once the ledger gave it an id and a `seq`."""
        return ChatMessage(
            id=message_id,
            conversation_id=self.conversation_id,
            seq=seq,
            sender_id=self.sender_id,
            sender_type=self.sender_type,
            content=self.content,
            client_msg_id=self.client_msg_id,
            created_at=created_at,
            meta=self.meta,
        )


@dataclass(frozen=True)
class ChatMessage:
    id: int
    conversation_id: int
    seq: int
    sender_id: int
    sender_type: str
    content: str
    client_msg_id: str
    created_at: datetime
    meta: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Ids as strings: 64-bit snowflakes do not fit a JavaScript number."""
        body: dict[str, Any] = {
            "id": str(self.id),
            "conversation_id": str(self.conversation_id),
            "seq": self.seq,
            "sender_id": str(self.sender_id),
            "sender_type": self.sender_type,
            "content": self.content,
            "client_msg_id": self.client_msg_id,
            "created_at": self.created_at.isoformat(),
        }
        if self.meta:
            body["meta"] = self.meta
        return body


@dataclass(frozen=True)
class InboxItem:
    """One message in one user's inbox, at that user's gap-free `inbox_seq`."""

    user_id: int
    inbox_seq: int
    message: ChatMessage

    def to_json(self) -> dict[str, Any]:
        return {
            "inbox_seq": self.inbox_seq,
            "conversation_id": str(self.message.conversation_id),
            "message": self.message.to_json(),
        }


@dataclass(frozen=True)
class InboxRef:
    """An inbox entry without its message body (what the ledger and HBase inbox rows hold)."""

    user_id: int
    inbox_seq: int
    message_id: int
    conversation_id: int
    seq: int
