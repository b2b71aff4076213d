"""Sending, reading and typing — the operations the HTTP routes and the WebSocket share.

A send is: append (store once, next `seq`, idempotent on client_msg_id), then fan out.
Conversations with at most `fanout_workflow_threshold` user members fan out inline, batch by
batch; larger ones start the `MessageFanout` workflow, and the send is acknowledged once the
workflow is started (durable from there on). Until a fan-out finishes the ledger row says
`pending`, so if the process dies half-way the recovery loop (`Hub._recover`) restarts the
remainder through the workflow — a resend with the same client_msg_id does the same at once.
The common case — a small audience and no agent to run — is one ledger write that stores the
message, fills every member's inbox and marks it done, so it is never `pending` at all.

A change (an edit, a deletion, a reaction, a membership change; `chatee.messaging.changes`)
goes the same way: for a small audience one ledger write records it and fills every inbox;
for a large one it is `pending` and fanned out by the same workflow, resumed by the same
recovery loop.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from chatee.config import Settings
from chatee.errors import TooLarge
from chatee.logging import get_logger
from chatee.messaging import conversations, ledger, names
from chatee.messaging.cache import Cache
from chatee.messaging.conversations import View
from chatee.messaging.fanout import Pushes, push_change, push_delivered
from chatee.messaging.stores import MessageStore
from chatee.messaging.types import MESSAGE, Change, ChatMessage, Draft, InboxItem
from workflows.fanout import FanoutInput
from workflows.names import FANOUT_WORKFLOW, MESSAGES_QUEUE, fanout_workflow_id

log = get_logger(__name__)


@dataclass(frozen=True)
class InboxPage:
    """Inbox entries after a cursor; `next_after` is the cursor for the next page."""

    items: list[dict[str, Any]]  # {inbox_seq, kind, conversation_id, message | change fields}
    next_after: int
    has_more: bool


@dataclass(frozen=True)
class Sent:
    message: ChatMessage
    created: bool  # False: a resend, answered with the first send's message
    pending: bool  # its fan-out (and agent runs) still need doing


class Messenger:
    def __init__(
        self,
        settings: Settings,
        db: ledger.Factory,
        redis: Redis,
        store: MessageStore,
        temporal: Client | None,
    ) -> None:
        self.settings = settings
        self.knobs = settings.messaging
        self.db = db
        self.redis = redis
        self.store = store
        self.cache = Cache(redis, self.knobs.cache_ttl_seconds, self.knobs.near_cache_seconds)
        self.pushes = Pushes(redis, settings.messaging.push_buckets)
        self.temporal = temporal

    async def view(self, conversation_id: int, user_id: int) -> View:
        return await conversations.visible_view(self.db, self.cache, conversation_id, user_id)

    async def append(
        self,
        view: View,
        sender_id: int,
        content: str,
        client_msg_id: str,
        sender_type: str = "user",
        meta: dict[str, Any] | None = None,
        *,
        fan_out: bool = False,
        hand_off: bool = False,
    ) -> Sent:
        """Store the message once per client_msg_id. `fan_out`: a small audience gets its
        inbox entries in the same write and its pushes before this returns (the answer is not
        `pending`), so a conversation's `seq` order is every inbox's order. `hand_off`: work
        remains after that (an agent to run): the message stays `pending` — delivered, but
        resumed by recovery until the caller's `fan_out` marks it done."""
        limit = self.settings.limits.max_message_bytes
        if len(content.encode()) > limit:
            raise TooLarge(f"content is over the {limit}-byte limit")
        draft = Draft(view.id, sender_id, content, client_msg_id, sender_type, meta)
        users = view.user_ids()
        inline = fan_out and len(users) <= min(
            self.knobs.fanout_workflow_threshold, self.knobs.fanout_batch_size
        )
        try:
            if inline:
                status = "pending" if hand_off else "done"
                message, created, items = await self.store.append_delivered(draft, users, status)
            else:
                message, created = await self.store.append(draft)
        except ledger.ConversationGone:
            raise conversations.not_found() from None
        message = (await self.named([message]))[0]
        if created:
            if inline:
                await push_delivered(self.pushes, message, items)  # the frame is `message`'s
            return Sent(message, True, pending=hand_off or not inline)
        row = await ledger.message_row(self.db, message.id)  # a resend: did the first finish?
        return Sent(message, False, row is not None and row.fanout_status == "pending")

    async def fan_out(self, view: View, message: ChatMessage) -> None:
        """Inline for small audiences, else through the workflow (returns once started)."""
        users = view.user_ids()
        if len(users) > self.knobs.fanout_workflow_threshold:
            await self.start_fanout(message.id)
            return
        message = (await self.named([message]))[0]
        size = self.knobs.fanout_batch_size
        batches = [users[i : i + size] for i in range(0, len(users), size)] or [[]]
        for n, batch in enumerate(batches):
            last = n == len(batches) - 1  # the last batch also marks the message fanned out
            await self.deliver(message, batch, finish=last)

    async def deliver(
        self,
        item: ChatMessage | Change,
        users: Sequence[int],
        *,
        finish: bool = False,
        path: str = "inline",
    ) -> list[InboxItem]:
        """Put a message or a change (named) in these users' inboxes and push it — after what
        of its conversation is still pending before it, which goes first, in the same write,
        to whoever of `users` lacks it. So whichever fan-out reaches a user first, that
        user's inbox takes the conversation's items in order; an entry is written once per
        user and item, so each earlier item's own fan-out finds it in place."""
        earlier = await ledger.earlier_pending(self.db, item.item)
        lacking = await ledger.lacking(self.db, earlier, users)
        before = []
        for ref in earlier:
            if not lacking.get(ref.id):
                continue
            if (body := await self.load(ref.id, ref.kind != MESSAGE)) is not None:
                before.append((body, lacking[ref.id]))
        if isinstance(item, Change):
            items = await self.store.deliver_change(item, users, finish, before)
        else:
            items = await self.store.deliver(item, users, finish, before)
        for body, group in itertools.groupby(items, key=_body_of):  # earlier ones first
            if isinstance(body, Change):
                await push_change(self.pushes, body, list(group), path)
            else:
                await push_delivered(self.pushes, body, list(group), path)
        return [i for i in items if _body_of(i).item == item.item]

    async def load(self, item_id: int, change: bool = False) -> ChatMessage | Change | None:
        """A message (or, `change`, a change) as `deliver` takes it, named; None once it is
        gone."""
        if change:
            found = await self.store.get_change(item_id)
            return None if found is None else await self.named_change(found)
        message = await self.store.get(item_id)
        return None if message is None else (await self.named([message]))[0]

    async def start_fanout(self, message_id: int, item: str = "message") -> None:
        """The `MessageFanout` workflow for a message (or, `item="change"`, a change)."""
        if self.temporal is None:
            raise RuntimeError("a workflow fan-out needs a Temporal client")
        with contextlib.suppress(WorkflowAlreadyStartedError):  # it ran to completion already
            await self.temporal.start_workflow(
                FANOUT_WORKFLOW,
                FanoutInput(
                    str(message_id),
                    self.knobs.fanout_batch_size,
                    self.knobs.fanout_parallelism,
                    item,
                ),
                id=fanout_workflow_id(message_id),
                task_queue=MESSAGES_QUEUE,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=f"fan out {item} {message_id}",
            )

    # -- changes ------------------------------------------------------------------------------

    def inline(self, users: Sequence[int]) -> bool:
        """Whether a change to this audience is recorded and delivered in one write."""
        return len(users) <= min(self.knobs.fanout_workflow_threshold, self.knobs.fanout_batch_size)

    async def publish_change(
        self, view: View, change: Change, items: list[InboxItem], inline: bool
    ) -> None:
        """After a change was recorded: push what its write delivered, or fan it out."""
        change = await self.named_change(change)
        if inline:
            await push_change(self.pushes, change, [_with_change(i, change) for i in items])
        else:
            await self.fan_out_change(view, change)

    async def fan_out_change(self, view: View | None, change: Change) -> None:
        """`fan_out` for a change: those no longer in the conversation (`extra_users`) first,
        then the members, inline or through the workflow (returns once it is started)."""
        change = await self.named_change(change)
        size = self.knobs.fanout_batch_size
        gone = list(change.extra_users)
        for i in range(0, len(gone), size):
            await self.deliver(change, gone[i : i + size])
        users = view.user_ids() if view is not None else []
        if len(users) > self.knobs.fanout_workflow_threshold:
            await self.start_fanout(change.id, "change")
            return
        batches = [users[i : i + size] for i in range(0, len(users), size)] or [[]]
        for n, batch in enumerate(batches):
            last = n == len(batches) - 1
            await self.deliver(change, batch, finish=last)

    async def pending_changes(self) -> list[int]:
        grace = timedelta(seconds=self.knobs.recovery_grace_seconds)
        return await self.store.pending_changes(datetime.now(UTC) - grace)

    # -- rendering ----------------------------------------------------------------------------

    async def named(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages with `sender_name` (a cache read for the page, no query per message)."""
        return await names.named(self.db, self.cache, messages)

    async def named_change(self, change: Change) -> Change:
        if change.message is None or change.message.sender_name is not None:
            return change
        return change.with_message((await self.named([change.message]))[0])

    async def named_items(self, items: Sequence[InboxItem]) -> list[InboxItem]:
        """Inbox items with every message in them named (one lookup for the page)."""
        messages = [m for i in items if (m := _message_of(i)) is not None]
        by_id = {m.id: m for m in await self.named(messages)}
        return [_renamed(i, by_id) for i in items]

    async def with_reactions(
        self, messages: Sequence[ChatMessage], viewer: int
    ) -> list[ChatMessage]:
        """The messages with their `reactions` as `viewer` sees them (two queries a page)."""
        found = await ledger.reactions_of(self.db, [m.id for m in messages], viewer)
        return [replace(m, reactions=found.get(m.id, ())) for m in messages]

    async def pending_fanouts(self) -> list[int]:
        grace = timedelta(seconds=self.knobs.recovery_grace_seconds)
        return await self.store.pending_fanouts(datetime.now(UTC) - grace)

    async def inbox_page(self, user_id: int, after: int, limit: int | None) -> InboxPage:
        """The user's inbox after `after` (how every device catches up: `inbox_seq` is
        gap-free per user, so nothing is lost and nothing comes twice)."""
        limit = min(limit or self.knobs.sync_page_size, self.knobs.sync_page_size)
        items = await self.named_items(await self.store.inbox(user_id, after, limit))
        next_after = items[-1].inbox_seq if items else after
        if len(items) == limit:
            has_more = True
        else:  # a short page can still be followed by entries committed meanwhile
            head = (await self.store.inbox_heads([user_id]))[user_id]
            has_more = head > next_after
            next_after = min(next_after, head)  # an `after` beyond the end points at the end
        return InboxPage([i.to_json() for i in items], next_after, has_more)

    async def mark_read(self, view: View, user_id: int, seq: int) -> int:
        marker = await conversations.mark_read(self.db, view.id, user_id, seq)
        # the user's other devices update their unread counts
        frame = {
            "type": "read",
            "conversation_id": str(view.id),
            "user_id": str(user_id),
            "seq": marker,
        }
        await self.pushes.frame([user_id], frame)
        return marker

    async def typing(self, view: View, user_id: int) -> None:
        users = view.user_ids()
        if len(users) > self.knobs.presence_fanout_max:
            return  # a crowd does not need to know who is typing
        frame = {"type": "typing", "conversation_id": str(view.id), "user_id": str(user_id)}
        await self.pushes.frame([u for u in users if u != user_id], frame)

    async def publish_presence(self, frame: dict[str, Any], to: Sequence[int]) -> None:
        await self.pushes.frame(to, frame)


def _body_of(item: InboxItem) -> ChatMessage | Change:
    body = item.change if item.change is not None else item.message
    assert body is not None
    return body


def _with_change(item: InboxItem, change: Change) -> InboxItem:
    return replace(item, change=change)


def _message_of(item: InboxItem) -> ChatMessage | None:
    return item.change.message if item.change is not None else item.message


def _renamed(item: InboxItem, by_id: dict[int, ChatMessage]) -> InboxItem:
    message = _message_of(item)
    if message is None:
        return item
    if item.change is not None:
        return replace(item, change=item.change.with_message(by_id[message.id]))
    return replace(item, message=by_id[message.id])
