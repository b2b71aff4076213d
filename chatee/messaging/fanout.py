"""Write fan-out: one inbox entry per member, then a realtime push to whoever is online.

A push is one Redis PUBLISH per frame and *bucket* of its users (the same frame to many users,
or one `message.new` to all its recipients, each with their own `inbox_seq`). Users hash into
`messaging.push_buckets` channels, `chatee:push:<bucket>`, and an API process subscribes to
the buckets of the users it holds sockets for (api/ws/hub.py), handing each push to their
sockets, as the Socket.IO Redis adapter does per room. So a process reads the pushes of its
own users, not every push in the system: what it costs grows with its own users, not with
the global rate. A send to a group costs at most one publish per bucket its members fall in.
On a Redis Cluster the channels are sharded (SPUBLISH): each lives on one node. The process
that sends hands the push to its own sockets directly, without the round trip through Redis,
and skips its own echo.

Pub/sub is fire-and-forget, so a lost push costs nothing but latency: the socket notices the
gap at its next push (or the periodic reconcile) and fills it from the inbox.

On the wire a push is three lines: the sending process's node id (empty from a worker), the
targets, and the frame. Targets are a JSON list of user ids — each gets the frame as it is —
or, for an inbox entry (`message.new`, `inbox.event`), a JSON object `{user id: inbox_seq}`;
the frame is then the entry without its `inbox_seq`, which `message_text` puts in after the
`type` for each user. JSON never holds a raw newline, so `data.split("\n", 2)` takes it apart
without decoding the frame.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from sqlalchemy import select

from chatee.coalesce import Coalescer
from chatee.logging import get_logger
from chatee.messaging.ledger import Factory
from chatee.messaging.types import Change, ChatMessage, InboxItem, body_json
from chatee.metrics import record_fanout
from chatee.models import ConversationMember
from chatee.redis import REDIS_ERRORS, is_cluster, publish

log = get_logger(__name__)
PUSH_CHANNEL = "chatee:push"  # + ":<bucket>"
TARGETS_PER_PUSH = 1000  # one PUBLISH stays small; a 10,000-member batch is ten of them

Targets = list[int] | dict[int, int]  # users, or users and each one's inbox_seq
T = TypeVar("T")
Sink = Callable[[Targets, str], None]  # an API process's hub: hand a push to its sockets


def frame_type(change: Change | None) -> str:
    """A new message is pushed as `message.new`, any other inbox entry as `inbox.event`."""
    return "message.new" if change is None else "inbox.event"


def new_message_frame(item: InboxItem) -> dict[str, Any]:
    """The frame of an inbox entry (`message.new` or `inbox.event`)."""
    return {"type": frame_type(item.change), **item.to_json()}


def message_body(message: ChatMessage | None, change: Change | None = None) -> str:
    """An inbox entry's frame without `inbox_seq`: the same for every recipient."""
    body = {"type": frame_type(change), **body_json(message, change)}
    return json.dumps(body, separators=(",", ":"))


def message_text(inbox_seq: int, body: str) -> str:
    """One recipient's frame, as `new_message_frame` would encode it: `inbox_seq` goes in
    after the `type` (whose value holds no comma)."""
    cut = body.index(",") + 1
    return f'{body[:cut]}"inbox_seq":{inbox_seq},{body[cut:]}'


def push_channel(user_id: int, buckets: int) -> str:
    """The channel of the user's bucket (a hash: snowflake ids' low bits are mostly zero)."""
    return f"{PUSH_CHANNEL}:{zlib.crc32(str(user_id).encode()) % buckets}"


def by_channel(targets: Targets, buckets: int) -> dict[str, Targets]:
    """`targets` split by the channel of each user's bucket."""
    split: dict[str, Any] = {}
    if isinstance(targets, dict):
        for user_id, seq in targets.items():
            split.setdefault(push_channel(user_id, buckets), {})[user_id] = seq
    else:
        for user_id in targets:
            split.setdefault(push_channel(user_id, buckets), []).append(user_id)
    return split


def encode(origin: str, targets: Targets, text: str) -> str:
    if isinstance(targets, dict):
        return f"{origin}\n{json.dumps({str(u): s for u, s in targets.items()})}\n{text}"
    return f"{origin}\n{json.dumps(targets)}\n{text}"


def decode(data: str) -> tuple[str, Targets, str]:
    origin, raw, text = data.split("\n", 2)
    targets = json.loads(raw)
    if isinstance(targets, dict):
        return origin, {int(u): int(s) for u, s in targets.items()}, text
    return origin, [int(u) for u in targets], text


class Pushes:
    """Publishes pushes; in an API process also hands them to its own sockets first."""

    def __init__(self, redis: Redis, buckets: int) -> None:
        self.redis = redis
        self.buckets = buckets
        self.origin = ""  # the hub's node id, once a hub takes local delivery
        self.local: Sink | None = None
        # concurrent sends publish in one pipeline: (channel, payload) pairs
        self._publish: Coalescer[list[tuple[str, str]], None] = Coalescer(self._publish_batch)

    def push_locally(self, origin: str, sink: Sink) -> None:
        self.origin, self.local = origin, sink

    async def frame(self, user_ids: Sequence[int], frame: dict[str, Any]) -> None:
        await self.frames(user_ids, [frame])

    async def frames(self, user_ids: Sequence[int], frames: Sequence[dict[str, Any]]) -> None:
        """Frames to each user, in order (typing, presence, read markers, agent events)."""
        texts = [json.dumps(frame, separators=(",", ":")) for frame in frames]
        await self._send([(list(chunk), text) for text in texts for chunk in _chunks(user_ids)])

    async def messages(
        self, message: ChatMessage | None, items: Sequence[InboxItem], change: Change | None = None
    ) -> None:
        """`message.new` (or, for a change, `inbox.event`) to each recipient, with their own
        inbox_seq."""
        body = message_body(message, change)
        seqs = [(i.user_id, i.inbox_seq) for i in items]
        await self._send([(dict(chunk), body) for chunk in _chunks(seqs)])

    async def _send(self, pushes: list[tuple[Targets, str]]) -> None:
        """Failures are logged, not raised: the inbox already holds what matters."""
        if not pushes:
            return
        if self.local is not None:
            for targets, text in pushes:
                self.local(targets, text)
        await self._publish(
            [
                (channel, encode(self.origin, part, text))
                for targets, text in pushes
                for channel, part in by_channel(targets, self.buckets).items()
            ]
        )

    async def _publish_batch(self, calls: list[list[tuple[str, str]]]) -> list[tuple[None, None]]:
        sharded = is_cluster(self.redis)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for payloads in calls:
                    for channel, payload in payloads:
                        publish(pipe, channel, payload, sharded)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("realtime push failed; clients catch up by sync", error=str(exc))
        return [(None, None)] * len(calls)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[n : n + TARGETS_PER_PUSH] for n in range(0, len(items), TARGETS_PER_PUSH)]


async def push_delivered(
    pushes: Pushes, message: ChatMessage, items: Sequence[InboxItem], path: str = "inline"
) -> None:
    """Push inbox entries just written. `path` labels the fan-out lag metric: `inline` (the
    API, small audiences) or `workflow` (MessageFanout batches)."""
    if items:
        record_fanout(message.id, path)
    await pushes.messages(message, items)


async def push_change(
    pushes: Pushes, change: Change, items: Sequence[InboxItem], path: str = "inline"
) -> None:
    if items:
        record_fanout(change.id, path)
    await pushes.messages(None, items, change)


async def member_users(
    db: Factory, audience_id: int, after_user: int = 0, upto_user: int | None = None
) -> list[int]:
    """User members of a group or private chat with ids in (after_user, upto_user]."""
    stmt = select(ConversationMember.member_id).where(
        ConversationMember.conversation_id == audience_id,
        ConversationMember.kind == "user",
        ConversationMember.member_id > after_user,
    )
    if upto_user is not None:
        stmt = stmt.where(ConversationMember.member_id <= upto_user)
    async with db() as session:
        return list((await session.execute(stmt.order_by(ConversationMember.member_id))).scalars())


def batch_bounds(user_ids: Sequence[int], batch_size: int) -> list[tuple[int, int | None]]:
    """Split sorted user ids into (after, upto] ranges of `batch_size`; the last range is open
    so a member who joins while the fan-out runs is not skipped."""
    bounds: list[tuple[int, int | None]] = []
    after = 0
    for i in range(0, len(user_ids), batch_size):
        chunk = user_ids[i : i + batch_size]
        last = i + batch_size >= len(user_ids)
        bounds.append((after, None if last else chunk[-1]))
        after = chunk[-1]
    return bounds or [(0, None)]
