"""What the message store hands out: messages, changes and inbox items, with their JSON shapes.

An inbox entry is one of these kinds, each at the user's own gap-free `inbox_seq`:

* `message`: a new message;
* `message.edited` / `message.deleted`: a message changed (the item carries the message as
  it is now: edited text, or the tombstone);
* `reaction`: someone added or removed a reaction (the emoji, who, and the count it left);
* `member`: someone joined, left, was removed or got another role;
* `conversation.<what>` (e.g. `conversation.renamed`): the conversation itself changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chatee.timefmt import rfc3339

MESSAGE = "message"
EDITED = "message.edited"
DELETED = "message.deleted"
REACTION = "reaction"
MEMBER = "member"
RENAMED = "conversation.renamed"
GONE = "conversation.deleted"


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
class Reaction:
    """One emoji on one message as one viewer sees it."""

    emoji: str
    count: int
    me: bool

    def to_json(self) -> dict[str, Any]:
        return {"emoji": self.emoji, "count": self.count, "me": self.me}


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
    edited_at: datetime | None = None
    deleted: bool = False
    # filled in when rendered (`Messenger.named`, `Messenger.with_reactions`): names change,
    # and `me` depends on who looks
    sender_name: str | None = None
    reactions: tuple[Reaction, ...] | None = None

    def named(self, name: str) -> ChatMessage:
        return replace(self, sender_name=name)

    def to_json(self) -> dict[str, Any]:
        """Ids as strings: 64-bit snowflakes do not fit a JavaScript number."""
        body: dict[str, Any] = {
            "id": str(self.id),
            "conversation_id": str(self.conversation_id),
            "seq": self.seq,
            "sender_id": str(self.sender_id),
            "sender_type": self.sender_type,
            "sender_name": self.sender_name,
            "content": self.content,
            "client_msg_id": self.client_msg_id,
            "created_at": rfc3339(self.created_at),
            "edited_at": rfc3339(self.edited_at) if self.edited_at else None,
            "deleted": self.deleted,
        }
        if self.reactions is not None:
            body["reactions"] = [r.to_json() for r in self.reactions]
        if self.meta and not self.deleted:
            body["meta"] = self.meta
        return body

    @property
    def item(self) -> Item:
        return Item(MESSAGE, self.id, 0, self.conversation_id, self.seq)


@dataclass(frozen=True)
class Item:
    """What an inbox entry points at: a message (`change_id` 0) or a change."""

    kind: str
    message_id: int  # the message it is, or is about (0: none)
    change_id: int
    conversation_id: int
    seq: int  # that message's seq (0: none)

    @property
    def id(self) -> int:
        """The ledger row whose fan-out this is (a message's or a change's id)."""
        return self.change_id or self.message_id


@dataclass(frozen=True)
class Change:
    """A change every member must see; `message` is the message it is about, as it is now."""

    id: int
    conversation_id: int
    kind: str
    actor_id: int
    created_at: datetime
    message_id: int = 0
    seq: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    extra_users: tuple[int, ...] = ()
    message: ChatMessage | None = None

    @property
    def item(self) -> Item:
        return Item(self.kind, self.message_id, self.id, self.conversation_id, self.seq)

    def with_message(self, message: ChatMessage | None) -> Change:
        return replace(self, message=message)

    def to_json(self) -> dict[str, Any]:
        """The kind's own fields (beside `inbox_seq`, `kind`, `conversation_id`)."""
        body: dict[str, Any] = {
            "change_id": str(self.id),
            "actor_id": str(self.actor_id),
            "at": rfc3339(self.created_at),
        }
        if self.message_id:
            body["message_id"] = str(self.message_id)
            body["seq"] = self.seq
        if self.kind in (EDITED, DELETED) and self.message is not None:
            body["message"] = self.message.to_json()
        if self.kind == REACTION:
            body["reaction"] = {**self.data, "user_id": str(self.actor_id)}
        if self.kind == MEMBER:
            body["member"] = self.data
        if self.kind.startswith("conversation."):
            body["conversation"] = self.data
        return body


@dataclass(frozen=True)
class InboxItem:
    """One entry in one user's inbox, at that user's gap-free `inbox_seq`: a message, or a
    change (`change`, whose kind is the item's)."""

    user_id: int
    inbox_seq: int
    message: ChatMessage | None
    change: Change | None = None

    @property
    def kind(self) -> str:
        return self.change.kind if self.change is not None else MESSAGE

    @property
    def conversation_id(self) -> int:
        if self.change is not None:
            return self.change.conversation_id
        assert self.message is not None
        return self.message.conversation_id

    def to_json(self) -> dict[str, Any]:
        return {"inbox_seq": self.inbox_seq, **body_json(self.message, self.change)}


def body_json(message: ChatMessage | None, change: Change | None) -> dict[str, Any]:
    """An inbox item without its `inbox_seq`: the same for every recipient."""
    if change is not None:
        return {
            "kind": change.kind,
            "conversation_id": str(change.conversation_id),
            **change.to_json(),
        }
    assert message is not None
    return {
        "kind": MESSAGE,
        "conversation_id": str(message.conversation_id),
        "message": message.to_json(),
    }


@dataclass(frozen=True)
class InboxRef:
    """An inbox entry without its message body (what the ledger and HBase inbox rows hold)."""

    user_id: int
    inbox_seq: int
    message_id: int
    conversation_id: int
    seq: int
    kind: str = MESSAGE
    change_id: int = 0
