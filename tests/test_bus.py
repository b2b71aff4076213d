"""The session event stream on Redis: ordering, resuming, once-only publishing, following,
trimming, retention and the stream id pattern."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from chatee.bus import Event, EventBus, is_stream_id, once_marker, stream_key
from chatee.config import Settings
from chatee.redis import connect_redis


def parse(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


ONCE_KEYS = ("turn-1:done", "turn-2:done", "c", "k")  # every once_key used with `sid`


@pytest.fixture
async def sid(redis: Redis) -> AsyncIterator[str]:
    """A fresh session id; every key made for it is deleted afterwards."""
    session_id = uuid.uuid4().hex
    yield session_id
    await redis.delete(stream_key(session_id), *(once_marker(session_id, k) for k in ONCE_KEYS))


@pytest.fixture
async def bus(redis: Redis) -> AsyncIterator[EventBus]:
    bus = EventBus(redis)
    yield bus
    await bus.close()


async def test_publish_returns_increasing_ids(bus: EventBus, redis: Redis, sid: str) -> None:
    ids = [await bus.publish(sid, "tick", {"n": n}) for n in range(30)]
    assert all(i is not None and is_stream_id(i) for i in ids)
    parsed = [parse(i) for i in ids if i is not None]
    assert parsed == sorted(parsed)
    assert len(set(parsed)) == 30
    assert await redis.xlen(stream_key(sid)) == 30
    assert await bus.last_id(sid) == ids[-1]


async def test_read_resumes_exactly_after_any_id(bus: EventBus, sid: str) -> None:
    ids = [await bus.publish(sid, "tick", {"n": n}) for n in range(10)]
    everything = await bus.read(sid, "0-0", block_ms=10)
    assert [e.id for e in everything] == ids
    assert [e.data["n"] for e in everything] == list(range(10))
    assert all(e.event == "tick" for e in everything)
    assert [e.id for e in await bus.read(sid, "0", block_ms=10)] == ids
    for i, after in enumerate(ids):
        got = await bus.read(sid, after, block_ms=10)
        assert [e.id for e in got] == ids[i + 1 :]
    # count limits a page; the next page continues from its last id
    page = await bus.read(sid, "0-0", block_ms=10, count=4)
    assert [e.id for e in page] == ids[:4]
    rest = await bus.read(sid, page[-1].id, block_ms=10)
    assert [e.id for e in rest] == ids[4:]


async def test_publish_once_key_appends_once_under_concurrency(
    bus: EventBus, redis: Redis, sid: str
) -> None:
    results = await asyncio.gather(
        *(bus.publish(sid, "turn.completed", {"n": n}, once_key="turn-1:done") for n in range(20))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    events = await bus.read(sid, "0-0", block_ms=10)
    assert [e.id for e in events] == winners
    assert await redis.xlen(stream_key(sid)) == 1

    # a different key, or none, still appends
    assert await bus.publish(sid, "turn.completed", {}, once_key="turn-2:done") is not None
    assert await bus.publish(sid, "token", {}) is not None
    assert await bus.publish(sid, "token", {}) is not None
    assert await bus.publish(sid, "turn.completed", {}, once_key="turn-1:done") is None
    assert await redis.xlen(stream_key(sid)) == 4


async def test_once_key_is_per_session(bus: EventBus, redis: Redis, sid: str) -> None:
    other = uuid.uuid4().hex
    try:
        assert await bus.publish(sid, "e", {}, once_key="k") is not None
        assert await bus.publish(other, "e", {}, once_key="k") is not None
    finally:
        await redis.delete(stream_key(other), once_marker(other, "k"))


async def test_last_id_of_empty_stream(bus: EventBus, sid: str) -> None:
    assert await bus.last_id(sid) == "0-0"
    assert await bus.read(sid, "0-0", block_ms=10) == []
    first = await bus.publish(sid, "e", {})
    assert await bus.last_id(sid) == first
    assert [e.id for e in await bus.read(sid, "0-0", block_ms=10)] == [first]


async def test_every_payload_carries_session_id(bus: EventBus, sid: str) -> None:
    await bus.publish(sid, "a", {})
    await bus.publish(sid, "b", {"turn_id": "42", "text": "héllo 😀", "nested": {"x": [1, 2]}})
    await bus.publish(sid, "c", {"n": 1}, once_key="c")
    events = await bus.read(sid, "0-0", block_ms=10)
    assert [e.event for e in events] == ["a", "b", "c"]
    assert all(e.data["session_id"] == sid for e in events)
    assert events[1].data == {
        "session_id": sid,
        "turn_id": "42",
        "text": "héllo 😀",
        "nested": {"x": [1, 2]},
    }


async def test_integer_session_id_is_a_string_in_payload(redis: Redis) -> None:
    bus = EventBus(redis)
    session_id = uuid.uuid4().int >> 65  # an int, as the application uses
    try:
        await bus.publish(session_id, "e", {})
        (event,) = await bus.read(session_id, "0-0", block_ms=10)
        assert event.data["session_id"] == str(session_id)
    finally:
        await redis.delete(stream_key(session_id))


async def test_follow_yields_events_published_after_start(bus: EventBus, sid: str) -> None:
    await bus.publish(sid, "before", {})
    start = await bus.last_id(sid)
    seen: list[Event] = []

    async def collect(n: int) -> None:
        async with contextlib.aclosing(bus.follow(sid, start, block_ms=200)) as events:
            async for event in events:
                seen.append(event)
                if len(seen) == n:
                    return

    task = asyncio.create_task(collect(5))
    await asyncio.sleep(0.05)  # let the follower block in XREAD first
    published = []
    for n in range(5):
        published.append(await bus.publish(sid, "after", {"n": n}))
        await asyncio.sleep(0)
    await asyncio.wait_for(task, timeout=5)
    assert [e.id for e in seen] == published
    assert [e.event for e in seen] == ["after"] * 5
    assert [e.data["n"] for e in seen] == list(range(5))


async def test_follow_keeps_waiting_across_empty_reads(bus: EventBus, sid: str) -> None:
    start = await bus.last_id(sid)

    async def first() -> Event:
        async with contextlib.aclosing(bus.follow(sid, start, block_ms=20)) as events:
            async for event in events:
                return event
        raise AssertionError("follow ended")

    task = asyncio.create_task(first())
    await asyncio.sleep(0.1)  # several empty XREADs time out meanwhile
    assert not task.done()
    published = await bus.publish(sid, "late", {})
    event = await asyncio.wait_for(task, timeout=5)
    assert event.id == published


async def _first_events(
    bus: EventBus, session_id: str, after: str, n: int, block_ms: int = 10_000
) -> list[Event]:
    got: list[Event] = []
    async with contextlib.aclosing(bus.follow(session_id, after, block_ms=block_ms)) as events:
        async for event in events:
            got.append(event)
            if len(got) == n:
                return got
    raise AssertionError("follow ended")


async def test_followers_share_one_connection_so_the_pool_stays_free(redis_url: str) -> None:
    """Forty streams followed on a pool of eight: each used to hold a connection in XREAD
    BLOCK, so the ninth follower and every other command waited for one (10 s, then failed)."""
    client = connect_redis(Settings(redis_url=redis_url, redis_max_connections=8))
    bus = EventBus(client)
    sessions = [uuid.uuid4().hex for _ in range(40)]
    try:
        followers = [asyncio.create_task(_first_events(bus, s, "0-0", 1)) for s in sessions]
        await asyncio.sleep(0.2)  # all of them waiting
        published = [await bus.publish(s, "e", {"s": s}) for s in sessions]  # 40 commands
        got = await asyncio.wait_for(asyncio.gather(*followers), timeout=30)
        assert [events[0].id for events in got] == published
    finally:
        await bus.close()
        await client.delete(*(stream_key(s) for s in sessions))
        await client.aclose()


async def test_followers_of_one_stream_each_get_their_own_events(bus: EventBus, sid: str) -> None:
    first = await bus.publish(sid, "e", {"n": 0})
    assert first is not None
    from_start = asyncio.create_task(_first_events(bus, sid, "0-0", 4))
    from_first = asyncio.create_task(_first_events(bus, sid, first, 3))
    await asyncio.sleep(0.05)
    later = [await bus.publish(sid, "e", {"n": n}) for n in (1, 2, 3)]
    assert [e.id for e in await asyncio.wait_for(from_start, 5)] == [first, *later]
    assert [e.id for e in await asyncio.wait_for(from_first, 5)] == later


async def test_following_goes_on_after_the_watch_loses_its_connection(
    bus: EventBus, redis: Redis, sid: str
) -> None:
    """Blocks of a minute: only the watch's wake-ups (not a timeout) can deliver in time."""
    bus.watch.name = f"test-watch-{uuid.uuid4().hex[:8]}"
    bus.watch.block_ms = 60_000
    start = await bus.last_id(sid)
    follower = asyncio.create_task(_first_events(bus, sid, start, 2, block_ms=60_000))
    published = [await bus.publish(sid, "e", {"n": 0})]
    await asyncio.sleep(0.1)
    (watch,) = [c for c in await redis.client_list() if c.get("name") == bus.watch.name]
    await redis.client_kill_filter(_id=watch["id"])
    await asyncio.sleep(0.1)
    published.append(await bus.publish(sid, "e", {"n": 1}))
    assert [e.id for e in await asyncio.wait_for(follower, 20)] == published

    # a stream followed for the first time after the reconnect is included at once
    other = uuid.uuid4().hex
    try:
        late = asyncio.create_task(_first_events(bus, other, "0-0", 1, block_ms=60_000))
        await asyncio.sleep(0.1)
        event_id = await bus.publish(other, "e", {})
        assert [e.id for e in await asyncio.wait_for(late, 20)] == [event_id]
    finally:
        await redis.delete(stream_key(other))


async def test_length_is_trimmed_approximately(redis: Redis, sid: str) -> None:
    bus = EventBus(redis, max_len=50)
    last = None
    for n in range(500):
        last = await bus.publish(sid, "tick", {"n": n})
    length = await redis.xlen(stream_key(sid))
    assert 50 <= length <= 150
    assert await bus.last_id(sid) == last
    events = await bus.read(sid, "0-0", block_ms=10, count=1000)
    assert events[-1].id == last and events[-1].data["n"] == 499
    assert [e.data["n"] for e in events] == list(range(500 - length, 500))  # a suffix


async def test_stream_and_once_marker_expire_after_retention(redis: Redis, sid: str) -> None:
    bus = EventBus(redis, retention_seconds=120)
    await bus.publish(sid, "e", {}, once_key="k")
    ttl = await redis.ttl(stream_key(sid))
    assert 100 <= ttl <= 120
    marker_ttl = await redis.ttl(once_marker(sid, "k"))
    assert 100 <= marker_ttl <= 120
    # each publish refreshes the stream's expiry
    await redis.expire(stream_key(sid), 5)
    await bus.publish(sid, "e", {})
    assert await redis.ttl(stream_key(sid)) > 100


async def test_events_older_than_retention_are_trimmed(redis: Redis, sid: str) -> None:
    key = stream_key(sid)
    for n in range(1, 301):  # ids from 1970: far older than any retention
        await redis.xadd(key, {"event": "old", "data": "{}"}, id=f"{n}-0")
    bus = EventBus(redis, retention_seconds=60)
    newest = await bus.publish(sid, "new", {})
    remaining = [entry_id for entry_id, _ in await redis.xrange(key)]
    assert remaining[-1] == newest
    assert "1-0" not in remaining  # whole old nodes are dropped (MINID ~)
    assert len(remaining) < 301


@pytest.mark.parametrize("value", ["1700000000000-0", "0", "0-0", "1-2", "18446744073709551615"])
def test_stream_id_accepts(value: str) -> None:
    assert is_stream_id(value)


@pytest.mark.parametrize(
    "value",
    ["abc", "1-2-3", "' OR 1=1", "", "-", "1-", "-1", "$", ">", "+", "1 -2", "1-0 ", " 1-0"],
)
def test_stream_id_rejects(value: str) -> None:
    assert not is_stream_id(value)


@pytest.mark.parametrize("value", ["1-0\n", "١٧٠٠٠٠٠٠٠٠٠٠٠-٠", "99999999999999999999"])
async def test_redis_rejects_these_stream_ids(value: str, redis: Redis, sid: str) -> None:
    await EventBus(redis).publish(sid, "e", {})
    with pytest.raises(ResponseError, match="Invalid stream ID"):
        await redis.xread({stream_key(sid): value}, count=1)


@pytest.mark.parametrize("value", ["1-0\n", "١٧٠٠٠٠٠٠٠٠٠٠٠-٠", "99999999999999999999"])
def test_stream_id_rejects_what_redis_rejects(value: str) -> None:
    assert not is_stream_id(value)
