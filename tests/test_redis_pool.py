"""The Redis pool every Chatee process uses (`chatee.redis.connect_redis`) under a burst.

A burst of sends or handshakes puts hundreds of commands in flight at once. redis-py's default pool
refuses the 101st with "Too many connections"; ours waits for a free connection instead."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from chatee.config import Settings
from chatee.redis import connect_redis


async def test_more_concurrent_blocking_commands_than_redis_py_allows_by_default(
    redis_url: str,
) -> None:
    redis = connect_redis(Settings(redis_url=redis_url))
    key = f"test:pool:{uuid.uuid4().hex}"
    try:  # 150 callers blocked in Redis at the same moment, like 150 open event streams
        results = await asyncio.gather(
            *(redis.blpop([key], timeout=0.2) for _ in range(150)), return_exceptions=True
        )
    finally:
        await redis.aclose()
    assert results == [None] * 150


async def test_a_small_pool_makes_callers_wait_rather_than_fail(redis_url: str) -> None:
    redis = connect_redis(Settings(redis_url=redis_url, redis_max_connections=8))
    key = f"test:pool:{uuid.uuid4().hex}"
    try:
        waiting = [redis.blpop([key], timeout=0.1) for _ in range(24)]
        writes = [redis.rpush(f"{key}:n", n) for n in range(200)]
        results = await asyncio.gather(*waiting, *writes, return_exceptions=True)
        stored = await redis.lrange(f"{key}:n", 0, -1)
        await redis.delete(f"{key}:n")
    finally:
        await redis.aclose()
    assert results[:24] == [None] * 24
    assert not [r for r in results[24:] if isinstance(r, BaseException)]
    assert sorted(map(int, stored)) == list(range(200))


async def test_a_connection_the_server_closed_is_replaced_by_the_retry(
    redis_url: str, redis: Redis
) -> None:
    """What a Redis restart leaves in the pool: connections the server has closed. The next
    command on one reconnects and succeeds (redis-py's asyncio `Retry`; the sync one it was
    given before never retried, so the first request after a restart got a 503)."""
    name = f"retry-{uuid.uuid4().hex[:8]}"
    client = connect_redis(Settings(redis_url=f"{redis_url}?client_name={name}"))
    try:
        assert await client.ping()
        (conn,) = [c for c in await redis.client_list() if c.get("name") == name]
        await redis.client_kill_filter(_id=conn["id"])
        assert await client.set(f"test:pool:{name}", "1", ex=5)
    finally:
        await client.aclose()
