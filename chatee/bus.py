"""Session event stream on Redis Streams: `chatee:session:{ev<n>}:<id>:events`.

Activities append; the API reads from any stream id, so SSE `id:` is the Redis stream id and a
client resumes with `Last-Event-ID`. Streams are trimmed by age (kept at least
`events.retention_seconds`) and, as a safety net, by length.

Followers (SSE streams, WebSocket `chat.send`) do not each hold a Redis connection in a
blocking XREAD: one `StreamWatch` per process blocks on all the streams followed, and wakes
the followers of a stream when it has something new; each follower then reads its own events
from its own position without blocking, so a slow client only slows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import ConnectionPool, Redis, RedisCluster

from chatee.logging import get_logger, scrub
from chatee.redis import REDIS_ERRORS, is_cluster

log = get_logger(__name__)

_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_U64 = 2**64 - 1


def is_stream_id(text: str) -> bool:
    """A Redis stream id (`<ms>` or `<ms>-<seq>`, each part a 64-bit unsigned number)."""
    match = _STREAM_ID.fullmatch(text)
    return bool(match) and all(int(part) <= _U64 for part in match.groups() if part)


# KEYS[1] stream, KEYS[2] (optional) dedupe marker, in the stream's hash slot
# ARGV: min id kept, max length, ttl seconds, event name, JSON data
_PUBLISH = """
if #KEYS > 1 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
    return false
  end
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*',
                      'event', ARGV[4], 'data', ARGV[5])
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return id
"""


STREAM_GROUPS = 16  # on a cluster: at most this many blocking XREADs per process


def _group(session_id: int | str) -> str:
    group = zlib.crc32(str(session_id).encode()) % STREAM_GROUPS
    return f"{{ev{group}}}"


def stream_key(session_id: int | str) -> str:
    return f"chatee:session:{_group(session_id)}:{session_id}:events"


def once_marker(session_id: int | str, key: str) -> str:
    """The marker of an event published once (same hash slot as its stream)."""
    return f"chatee:once:{_group(session_id)}:{session_id}:{key}"


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: dict[str, Any]


class StreamWatch:
    """One blocking XREAD, on a connection of its own, for every stream this process follows.

    Each follower used to wait in its own XREAD BLOCK on a pooled connection, so a process
    following more streams than its Redis pool holds stopped every other Redis command. The
    watch keeps, per stream, the last id it has seen and the wake-ups of its followers; when
    XREAD returns entries past that id, it sets them. A stream followed for the first time
    interrupts the blocked XREAD (CLIENT UNBLOCK) so the next one includes it at once."""

    def __init__(
        self,
        redis: Redis,
        block_ms: int = 5000,
        locate: Callable[[], Awaitable[Redis]] | None = None,
    ) -> None:
        # on a cluster: the client of the node serving these streams' slot, asked anew after
        # an error (a failover moves the slot)
        self.locate = locate
        self.located: Redis | None = None
        self.redis = redis
        self.name = "chatee:stream-watch"  # CLIENT SETNAME of its connection
        self.block_ms = block_ms
        self.tails: dict[str, str] = {}  # stream key -> the last id the watch has seen
        self.wakes: dict[str, set[asyncio.Event]] = {}  # stream key -> its followers'
        self._task: asyncio.Task[None] | None = None
        self._has_keys = asyncio.Event()
        self._client_id: int | None = None  # of the connection blocked in XREAD
        self._keys_changed = 0  # bumped by a new stream; the watch notes what it has read
        self._keys_read = 0
        self._interrupts: set[asyncio.Task[None]] = set()

    def add(self, key: str, after: str, wake: asyncio.Event) -> None:
        """Wake `wake` whenever `key` gets an entry past `after` (or past what the watch has
        seen since)."""
        if key not in self.wakes:
            self.wakes[key] = set()
            self.tails[key] = after
            self._keys_changed += 1
            self._has_keys.set()
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="stream-watch")
            else:
                interrupt = asyncio.create_task(self._interrupt())
                self._interrupts.add(interrupt)
                interrupt.add_done_callback(self._interrupts.discard)
        self.wakes[key].add(wake)

    def discard(self, key: str, wake: asyncio.Event) -> None:
        followers = self.wakes.get(key)
        if followers is None:
            return
        followers.discard(wake)
        if not followers:
            del self.wakes[key]
            del self.tails[key]

    async def close(self) -> None:
        tasks = [*self._interrupts, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _interrupt(self) -> None:
        """Make the blocked XREAD return so the next one includes the new stream. An UNBLOCK
        that lands before the XREAD blocks does nothing, so it is repeated until the watch
        has read the new key set (followers also re-read now and then on their own)."""
        for _ in range(50):
            if self._keys_read >= self._keys_changed:
                return
            client_id = self._client_id
            if client_id is not None:
                with contextlib.suppress(Exception):
                    if await self.redis.client_unblock(client_id):
                        return
            await asyncio.sleep(0.002)

    async def _run(self) -> None:
        client: Redis | None = None  # a single connection, held by the watch
        backoff = 0.1
        try:
            while True:
                if not self.tails:
                    self._has_keys.clear()
                    await self._has_keys.wait()
                    continue
                try:
                    if client is None:
                        client = await self._connect()
                    if self._client_id is None:
                        await client.client_setname(self.name)
                        self._client_id = await client.client_id()
                    self._keys_read = self._keys_changed
                    reply = await client.xread(dict(self.tails), count=100, block=self.block_ms)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("stream watch: XREAD failed", error=str(exc))
                    self._client_id = None
                    self._wake_all()  # followers read on their own meanwhile
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    if self.locate and client is not None:  # the slot may have moved
                        with contextlib.suppress(Exception):
                            await client.aclose()
                        client = None
                    continue
                backoff = 0.1
                for raw_key, entries in reply or []:
                    key = _text(raw_key)
                    if key in self.tails and entries:
                        self.tails[key] = _text(entries[-1][0])
                        for wake in self.wakes.get(key, ()):
                            wake.set()
        finally:
            self._client_id = None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _wake_all(self) -> None:
        for followers in self.wakes.values():
            for wake in followers:
                wake.set()

    async def _connect(self) -> Redis:
        if self.locate:
            previous, self.redis = self.located, await self.locate()
            self.located = self.redis
            if previous is not None:  # a node client of ours (never the cluster's own client)
                with contextlib.suppress(Exception):
                    await previous.aclose()
        return self.redis.client()


class ClusterStreamWatch:
    """A `StreamWatch` per stream group, each on a client of the node serving the group's
    slot (XREAD over streams of several slots is refused on a cluster)."""

    def __init__(self, cluster: RedisCluster, block_ms: int = 5000) -> None:
        self.cluster = cluster
        self.block_ms = block_ms
        self.groups: dict[str, StreamWatch] = {}

    def add(self, key: str, after: str, wake: asyncio.Event) -> None:
        group = key.split(":")[2]  # the hash tag: see stream_key
        if group not in self.groups:
            watch = StreamWatch(self.cluster, self.block_ms, lambda: self._node(key))
            self.groups[group] = watch
        self.groups[group].add(key, after, wake)

    def discard(self, key: str, wake: asyncio.Event) -> None:
        watch = self.groups.get(key.split(":")[2])
        if watch:
            watch.discard(key, wake)

    async def close(self) -> None:
        for watch in self.groups.values():
            await watch.close()
            if watch.located is not None:
                with contextlib.suppress(Exception):
                    await watch.located.aclose()

    async def _node(self, key: str) -> Redis:
        await self.cluster.initialize()  # once: the slot map
        node = self.cluster.get_node_from_key(key)
        settings = self.cluster.get_connection_kwargs()
        wanted = ("username", "password", "decode_responses", "socket_timeout", "connection_class")
        kept = {k: v for k, v in settings.items() if k in wanted or k.startswith("ssl")}
        return Redis.from_pool(ConnectionPool(host=node.host, port=node.port, **kept))


class EventBus:
    def __init__(self, redis: Redis, retention_seconds: int = 86400, max_len: int = 100_000):
        self.redis = redis
        self.retention_seconds = retention_seconds
        self.max_len = max_len
        self._publish = redis.register_script(_PUBLISH)
        self.watch = ClusterStreamWatch(redis) if is_cluster(redis) else StreamWatch(redis)

    async def publish(
        self, session_id: int | str, event: str, data: dict[str, Any], once_key: str | None = None
    ) -> str | None:
        """Append an event; with `once_key`, only the first call with that key appends
        (a retried activity cannot show the same event twice). Returns the stream id."""
        keys = [stream_key(session_id), *([once_marker(session_id, once_key)] if once_key else [])]
        min_id = max(0, int(time.time() * 1000) - self.retention_seconds * 1000)
        # clients read these events: mask known secrets (a provider's error may quote its key)
        data = _scrubbed({**data, "session_id": str(session_id)})
        payload = json.dumps(data, separators=(",", ":"))
        result = await self._publish(
            keys=keys,
            args=[min_id, self.max_len, self.retention_seconds, event, payload],
        )
        return _text(result) if result else None

    async def last_id(self, session_id: int | str) -> str:
        """The id of the newest event, or `0-0`: reading after it yields only new events."""
        newest = await self.redis.xrevrange(stream_key(session_id), count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def read(
        self, session_id: int | str, after: str, block_ms: int | None = 15000, count: int = 500
    ) -> list[Event]:
        """Events after `after`; with `block_ms`, wait that long for the first (None: don't)."""
        reply = await self.redis.xread({stream_key(session_id): after}, count=count, block=block_ms)
        events: list[Event] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                fields = {_text(k): _text(v) for k, v in fields.items()}
                events.append(Event(_text(entry_id), fields["event"], json.loads(fields["data"])))
        return events

    async def follow(
        self, session_id: int | str, after: str, block_ms: int = 10000, count: int = 500
    ) -> AsyncIterator[Event]:
        """Every event after `after`, forever; the caller stops iterating. It reads without
        blocking and waits on the process's `StreamWatch` (or `block_ms`, whichever comes
        first). While Redis is unreachable it keeps trying from the same position, so nothing
        is skipped."""
        key, wake = stream_key(session_id), asyncio.Event()
        self.watch.add(key, after, wake)
        backoff = 0.1
        try:
            while True:
                wake.clear()  # before reading: whatever comes after the read sets it again
                try:
                    events = await self.read(session_id, after, block_ms=None, count=count)
                except (*REDIS_ERRORS, AttributeError) as exc:
                    # unreachable, failing over: the same position again. (redis-py's cluster
                    # client can fail with AttributeError on a connection torn down while a
                    # failover reinitialises it: seen once in four full test runs.)
                    log.warning("event stream read failed; retrying", error=type(exc).__name__)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                for event in events:
                    after = event.id
                    yield event
                if len(events) < count:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), block_ms / 1000)
        finally:
            self.watch.discard(key, wake)

    async def close(self) -> None:
        await self.watch.close()


def _scrubbed(value: Any) -> Any:
    """`value` with every string in it scrubbed (string by string, so JSON stays JSON)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
