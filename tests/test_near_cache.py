"""The near cache of API processes (chatee.messaging.cache) against the real Redis: each
`Cache` here stands for one process with its own connections, as two API processes would."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from chatee.config import Settings
from chatee.messaging.cache import Cache
from chatee.redis import connect_redis


@pytest.fixture
async def processes(redis_url: str) -> AsyncIterator[tuple[Cache, Cache, str]]:
    """Two listening caches on their own clients; the first one's connections are named so
    the test can find its subscription."""
    name = f"near-{uuid.uuid4().hex[:8]}"
    clients = [
        connect_redis(Settings(redis_url=f"{redis_url}?client_name={name}")),
        connect_redis(Settings(redis_url=redis_url)),
    ]
    caches = [Cache(client, 60, near_seconds=60) for client in clients]
    for cache in caches:
        cache.listen()
    await until(lambda: all(cache.near_on for cache in caches))
    yield caches[0], caches[1], name
    for cache, client in zip(caches, clients, strict=True):
        await cache.close()
        await client.aclose()


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10) -> None:
    async with asyncio.timeout(within):
        while True:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.01)


async def test_a_delete_on_one_process_drops_the_near_copy_on_the_other(
    processes: tuple[Cache, Cache, str], redis: Redis
) -> None:
    a, b, _ = processes
    key = f"chatee:cache:test:{uuid.uuid4().hex}"
    await b.set(key, {"v": 1})
    assert await a.get(key) == {"v": 1}
    await redis.set(key, json.dumps({"v": 2}))  # behind the caches' backs: no invalidation
    assert await a.get(key) == {"v": 1}  # a serves its near copy

    await b.delete(key)  # what a membership change does after its commit
    await until(lambda: _is(a, key, None), within=2)
    await b.set(key, {"v": 3})
    assert await a.get(key) == {"v": 3}
    assert await b.get(key) == {"v": 3}


async def test_a_reconnected_subscription_empties_the_near_copy(
    processes: tuple[Cache, Cache, str], redis: Redis
) -> None:
    """Invalidations published while a process's subscription is down are lost to it, so it
    must not keep anything it read before."""
    a, b, name = processes
    key = f"chatee:cache:test:{uuid.uuid4().hex}"
    await b.set(key, {"v": 1})
    assert await a.get(key) == {"v": 1}
    await redis.set(key, json.dumps({"v": 2}))  # a change whose invalidation a will miss
    assert await a.get(key) == {"v": 1}

    subscribers = [c for c in await redis.client_list(_type="pubsub") if c.get("name") == name]
    assert len(subscribers) == 1
    await redis.client_kill_filter(_id=subscribers[0]["id"])
    await until(lambda: _is(a, key, {"v": 2}))  # read from Redis again
    await until(lambda: a.near_on)

    await b.delete(key)  # and invalidations reach it again after the reconnect
    await b.set(key, {"v": 3})
    await until(lambda: _is(a, key, {"v": 3}), within=2)


async def _is(cache: Cache, key: str, value: object) -> bool:
    return await cache.get(key) == value
