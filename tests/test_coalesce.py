"""Coalescing concurrent round trips (`chatee.coalesce`), and the two places that use it
besides the ledger: cache reads share one MGET, pushes share one pipeline."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from chatee.coalesce import Coalescer, Outcome
from chatee.messaging.cache import Cache


async def test_calls_made_while_a_batch_runs_form_the_next_batch() -> None:
    batches: list[list[int]] = []

    async def double(items: list[int]) -> list[Outcome[int]]:
        batches.append(items)
        await asyncio.sleep(0.01)
        return [(None, ValueError(n)) if n == 13 else (n * 2, None) for n in items]

    coalescer: Coalescer[int, int] = Coalescer(double, max_batch=50)
    results = await asyncio.gather(*(coalescer(n) for n in range(120)), return_exceptions=True)
    assert [r for n, r in enumerate(results) if n != 13] == [n * 2 for n in range(120) if n != 13]
    assert isinstance(results[13], ValueError)  # its own failure, nobody else's
    assert [len(b) for b in batches] == [50, 50, 20]  # max_batch caps a batch
    assert sorted(n for b in batches for n in b) == list(range(120))


async def test_a_batch_that_fails_fails_every_call_in_it_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(items: list[str]) -> list[Outcome[str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return [(item.upper(), None) for item in items]

    coalescer: Coalescer[str, str] = Coalescer(flaky)
    first = await asyncio.gather(*(coalescer(s) for s in "ab"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await coalescer("c") == "C"


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[Outcome[int]]:
        await release.wait()
        return [(n, None) for n in items]

    coalescer: Coalescer[int, int] = Coalescer(slow)
    running = asyncio.ensure_future(coalescer(0))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(coalescer(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    release.set()
    assert await running == 0
    assert [await waiting[0], await waiting[2]] == [1, 3]
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]


async def test_concurrent_cache_reads_each_get_their_own_keys(redis: Redis) -> None:
    cache = Cache(redis, ttl_seconds=60)
    prefix = f"test:cache:{uuid.uuid4().hex}"
    for n in range(0, 40, 2):  # every other key exists
        await cache.set(f"{prefix}:{n}", {"n": n})
    reads = [cache.get_many(f"{prefix}:{n}", f"{prefix}:{n + 1}") for n in range(40)]
    results = await asyncio.gather(*reads)
    for n, (first, second) in enumerate(results):
        assert first == ({"n": n} if n % 2 == 0 else None)
        assert second == ({"n": n + 1} if (n + 1) % 2 == 0 and n + 1 < 40 else None)
    await redis.delete(*(f"{prefix}:{n}" for n in range(40)))
