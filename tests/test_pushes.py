"""Realtime pushes on the wire: one PUBLISH per frame and bucket of its users, on
`chatee:push:<bucket>`.

The hub forwards a push's frame text without decoding it, and builds each recipient's
`message.new` by putting that user's inbox_seq in front of the shared body — so these check
that what a socket receives is exactly the frame the contract describes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from chatee.messaging.fanout import (
    TARGETS_PER_PUSH,
    Pushes,
    Targets,
    decode,
    encode,
    message_body,
    message_text,
    new_message_frame,
    push_channel,
)
from chatee.messaging.types import ChatMessage, InboxItem
from chatee.redis import Subscriptions

MESSAGE = ChatMessage(
    id=2**62 + 7,
    conversation_id=2**61 + 3,
    seq=41,
    sender_id=17,
    sender_type="user",
    content='line one\nline "two" — héllo 😀 \u202e',
    client_msg_id="c-1",
    created_at=datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC),
    meta={"mentions": ["@helper"], "n": 1},
)


def test_each_recipients_frame_is_the_contract_frame_with_their_inbox_seq() -> None:
    body = message_body(MESSAGE)
    for user_id, inbox_seq in ((1, 1), (2, 987654321)):
        expected = new_message_frame(InboxItem(user_id, inbox_seq, MESSAGE))
        text = message_text(inbox_seq, body)
        assert json.loads(text) == expected
        assert text == json.dumps(expected, separators=(",", ":"))


def test_a_push_survives_the_wire_with_newlines_in_the_content() -> None:
    body = message_body(MESSAGE)
    origin, targets, text = decode(encode("node-a", {5: 9, 6: 10}, body))
    assert (origin, targets, text) == ("node-a", {5: 9, 6: 10}, body)
    origin, targets, text = decode(encode("", [5, 6], '{"type":"typing"}'))
    assert (origin, targets, text) == ("", [5, 6], '{"type":"typing"}')


async def test_a_large_audience_is_split_into_pushes_seen_locally_and_on_redis(
    redis: Redis,
) -> None:
    recipients = 2 * TARGETS_PER_PUSH + 500
    items = [InboxItem(u, u * 3, MESSAGE) for u in range(1, recipients + 1)]
    local: list[tuple[Targets, str]] = []
    pushes = Pushes(redis, buckets=1)  # one bucket: every push on one channel
    pushes.push_locally("node-a", lambda targets, text: local.append((targets, text)))
    pubsub = redis.pubsub()
    await pubsub.subscribe(push_channel(1, 1))
    try:
        await pushes.messages(MESSAGE, items)
        await pushes.frame([7, 8], {"type": "typing", "user_id": "9"})
        published = []
        deadline = time.monotonic() + 10
        while len(published) < 4 and time.monotonic() < deadline:
            got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if got is not None:
                published.append(decode(got["data"]))
    finally:
        await pubsub.aclose()
    assert [(t, x) for _, t, x in published] == local
    assert {o for o, _, _ in published} == {"node-a"}
    *messages, typing = local
    assert [len(t) for t, _ in messages] == [TARGETS_PER_PUSH, TARGETS_PER_PUSH, 500]
    seqs = {u: s for t, _ in messages for u, s in t.items()}  # type: ignore[union-attr]
    assert seqs == {i.user_id: i.inbox_seq for i in items}
    assert typing == ([7, 8], '{"type":"typing","user_id":"9"}')


async def test_each_bucket_gets_only_its_users_and_together_all_of_them(redis: Redis) -> None:
    buckets = 8
    items = [InboxItem(u, u + 100, MESSAGE) for u in range(1, 201)]
    channels = sorted({push_channel(i.user_id, buckets) for i in items})
    assert len(channels) == buckets  # 200 users spread over every bucket
    pubsub = redis.pubsub()
    await pubsub.subscribe(*channels)
    try:
        await Pushes(redis, buckets).messages(MESSAGE, items)
        got: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while len(got) < len(items) and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is None:
                continue
            _, targets, _ = decode(message["data"])
            assert isinstance(targets, dict)
            # a process subscribed to this channel holds only users of this bucket
            assert {push_channel(u, buckets) for u in targets} == {message["channel"]}
            assert not set(targets) & set(got)  # each user once
            got.update(targets)
    finally:
        await pubsub.aclose()
    assert got == {i.user_id: i.inbox_seq for i in items}


async def test_channels_added_while_the_first_connection_is_made_are_all_heard(
    redis_url: str,
) -> None:
    """Sockets reach a fresh API process one after another while its pub/sub connection is
    being made, and each subscribes its bucket: every bucket is heard. (Each subscription that
    raced the connect once took a connection of its own that nobody read: its users got
    nothing live until the reconcile, 30 s later, and the connection leaked.)"""
    client = Redis.from_url(redis_url, decode_responses=True)
    channels = [f"test:push:{uuid.uuid4().hex}" for _ in range(50)]
    heard: list[str] = []
    all_heard = asyncio.Event()

    def hear(data: str) -> None:
        heard.append(data)
        if len(heard) == len(channels):
            all_heard.set()

    subscriptions = Subscriptions(client, hear)
    reading = asyncio.create_task(subscriptions.run())

    async def arrive(n: int, channel: str) -> None:
        await asyncio.sleep(n / 2000)
        await subscriptions.add(channel)

    try:
        await asyncio.gather(*(arrive(n, c) for n, c in enumerate(channels)))
        for channel in channels:
            await client.publish(channel, channel)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_heard.wait(), 10)
        assert sorted(heard) == sorted(channels)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await client.aclose()
