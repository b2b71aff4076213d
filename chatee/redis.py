"""Redis connection from settings (`CHATEE_REDIS_URL`, `CHATEE_REDIS_PASSWORD`,
`CHATEE_REDIS_MAX_CONNECTIONS`).

The pool is a blocking one: when all its connections are busy a command waits for one
(up to `POOL_WAIT_SECONDS`) instead of failing. redis-py's default pool holds 100 and refuses
the 101st concurrent command with "Too many connections" — under a burst of sends or of
WebSocket handshakes that dropped realtime pushes, turned cache hits into SQL reads and
refused sockets whose token could not be checked. Followed event streams share one
connection (`chatee.bus.StreamWatch`), so open SSE streams do not use up the pool.

`Subscriptions` reads pub/sub channels for as long as a process runs, across Redis restarts.

With `CHATEE_REDIS_CLUSTER=true` the client is a `RedisCluster` (the URL names any node). Code
that works on both keeps every multi-key command, script and transaction inside one hash slot
(hash tags: `{…}` in the key), reads many keys with `get_many`, and publishes what many
processes listen to on sharded channels (`SPUBLISH`/`SSUBSCRIBE`: `publish`, `Subscription`).
A cluster's client-side failures (no reachable node, slots not covered) are
`RedisClusterException`, which is not a `RedisError`: catch `REDIS_ERRORS`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry  # not redis.retry's: that one cannot await a command
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import get_lib_version

from chatee.config import Settings
from chatee.logging import get_logger

log = get_logger(__name__)

POOL_WAIT_SECONDS = 10
REDIS_ERRORS = (RedisError, RedisClusterException)  # what "Redis failed" means on both kinds
# what redis-py sends in CLIENT SETINFO, read once: by default every new connection looks the
# version up in the installed package metadata (~1 ms each, a lot in a burst of connections)
DRIVER = DriverInfo(name="redis-py", lib_version=get_lib_version())


def connect_redis(settings: Settings) -> Redis:
    """The process's client: a `Redis` over a blocking pool, or a `RedisCluster` (which has the
    same commands; see the module docstring for what differs)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    common: dict[str, Any] = dict(
        password=password,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=30,  # above the 5 s block of the stream watch's XREAD
        retry=Retry(ExponentialBackoff(cap=1, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        driver_info=DRIVER,
    )
    if settings.redis_cluster:  # per node; a failover is followed on MOVED or a lost node
        url, most = settings.redis_connection_url(), settings.redis_max_connections
        return RedisCluster.from_url(url, max_connections=most, **common)  # type: ignore[return-value]
    pool = BlockingConnectionPool.from_url(
        settings.redis_connection_url(),
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_SECONDS,
        **common,
    )
    return Redis.from_pool(pool)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def get_many(redis: Redis, keys: list[str]) -> list[str | None]:
    """GET of many keys: one MGET on a single Redis; per slot on a cluster (MGET across slots
    is refused there)."""
    if not keys:
        return []
    if is_cluster(redis):
        return await redis.mget_nonatomic(keys)  # type: ignore[attr-defined]
    return await redis.mget(keys)


def publish(target: Redis | Pipeline, channel: str, message: str, sharded: bool) -> Any:
    """PUBLISH, or SPUBLISH on a cluster: a sharded channel lives on the node of its slot, so
    only that node's subscribers and links carry it (plain PUBLISH goes to every node)."""
    return target.spublish(channel, message) if sharded else target.publish(channel, message)


class Subscriptions:
    """Read a changing set of pub/sub channels until cancelled: each message's data goes to
    `on_message`.

    redis-py's PubSub does not come back from a connection the server closed (a restart, a
    CLIENT KILL): every later read fails. So after any error the subscriptions are made anew
    on a fresh connection. Messages published in between are lost to this process, so
    `on_subscribed` is called each time every channel is (again) confirmed by Redis: from then
    on nothing is missed, and whatever depends on having heard everything can resume.

    Channels are counted: `add` subscribes the first time and returns once Redis has confirmed
    the channel (so state read after it misses nothing published later); `discard`
    unsubscribes when the last holder lets go. On a cluster the channels are sharded ones
    (SSUBSCRIBE on the node serving each channel's slot; redis-py moves them after a
    failover, and a lost node is handled as above)."""

    CONFIRM_SECONDS = 5  # `add` gives up waiting after this (the caller's reconcile fills in)

    def __init__(
        self,
        redis: Redis,
        on_message: Callable[[str], None],
        on_subscribed: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
        channels: Iterable[str] = (),
    ) -> None:
        self.redis = redis
        self.on_message = on_message
        self.on_subscribed = on_subscribed
        self.on_lost = on_lost
        self.sharded = is_cluster(redis)
        self.holders: dict[str, int] = dict.fromkeys(channels, 1)
        self.confirmed: dict[str, asyncio.Event] = {c: asyncio.Event() for c in self.holders}
        self._pubsub: Any = None
        # redis-py's PubSub takes its connection on its first command: two commands racing
        # that first connect take a connection each, and the channels of the one it drops are
        # read by nobody (pushes to their users lost until the reconcile, the connection
        # leaked). So (un)subscribing, and making the PubSub, take turns.
        self._commands = asyncio.Lock()
        self._unconfirmed: set[str] = set()  # after a (re)connect: channels Redis has not confirmed
        self._changed = asyncio.Event()
        self._nodes_changed = asyncio.Event()  # a cluster: a channel may live on a new node

    async def add(self, channel: str) -> None:
        self.holders[channel] = self.holders.get(channel, 0) + 1
        confirmed = self.confirmed.setdefault(channel, asyncio.Event())
        if self.holders[channel] == 1:
            async with self._commands:
                if self._pubsub is not None and channel in self.holders:
                    with contextlib.suppress(Exception):  # a failure is the read loop's to mend
                        await self._subscribe(self._pubsub, channel)
            self._changed.set()
            self._nodes_changed.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(confirmed.wait(), self.CONFIRM_SECONDS)

    async def discard(self, channel: str) -> None:
        left = self.holders.get(channel, 0) - 1
        if left > 0:
            self.holders[channel] = left
            return
        self.holders.pop(channel, None)
        self.confirmed.pop(channel, None)
        async with self._commands:
            if self._pubsub is not None and channel not in self.holders:
                with contextlib.suppress(Exception):
                    if self.sharded:
                        await self._pubsub.sunsubscribe(channel)
                    else:
                        await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, pubsub: Any, *channels: str) -> None:
        if self.sharded:
            await pubsub.ssubscribe(*channels)
        else:
            await pubsub.subscribe(*channels)

    async def run(self) -> None:
        backoff = 0.1
        try:
            while True:
                if not self.holders:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                try:
                    if self._pubsub is None:
                        async with self._commands:  # a channel added meanwhile waits, then
                            pubsub = self._pubsub = self.redis.pubsub()  # subscribes itself
                            self._unconfirmed = set(self.holders)
                            await self._subscribe(pubsub, *self._unconfirmed)
                        if not self.sharded:
                            # if redis-py ever reconnects by itself, messages were missed too
                            pubsub.connection.register_connect_callback(self._reconnected)
                    if self.sharded:
                        await self._read_nodes()  # returns only by raising
                        continue
                    message = await self._pubsub.get_message(timeout=1)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("pub/sub read failed", channels=len(self.holders), error=str(exc))
                    self.on_lost()
                    await self._close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                if message is not None:
                    self._handle(message)
        finally:
            self.on_lost()
            await self._close()

    async def _read_nodes(self) -> None:
        """On a cluster: one reader per node that holds some of the channels. (redis-py's own
        `get_sharded_message` polls the nodes in turn, waiting on each idle one.)"""
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for name in self._pubsub.node_pubsub_mapping:
                    if name not in readers:
                        readers[name] = asyncio.create_task(self._read_node(name))
                for name in [n for n, task in readers.items() if task.done()]:
                    readers.pop(name).result()  # a failed reader's error ends the read
                self._nodes_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nodes_changed.wait(), 1)
        finally:
            for task in readers.values():
                task.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _read_node(self, name: str) -> None:
        pubsub = self._pubsub
        node = pubsub.cluster.get_node(node_name=name)
        while name in pubsub.node_pubsub_mapping:  # until its last channel there is dropped
            message = await pubsub.get_sharded_message(timeout=1, target_node=node)
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        try:
            if message["type"] in ("subscribe", "ssubscribe"):
                channel = message["channel"]
                if event := self.confirmed.get(channel):
                    event.set()
                if channel in self._unconfirmed:
                    self._unconfirmed.discard(channel)
                    if not self._unconfirmed:
                        self.on_subscribed()
            elif message["type"] in ("message", "smessage"):
                self.on_message(message["data"])
        except Exception:
            log.exception("pub/sub message not handled", channel=message.get("channel"))

    async def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _reconnected(self, _: Any) -> None:
        # redis-py resubscribes: `on_subscribed` follows the confirmations
        self._unconfirmed = set(self.holders)
        self.on_lost()
