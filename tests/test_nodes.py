"""Node-id leases: processes sharing one configuration still mint distinct snowflake ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from chatee import ids
from chatee.nodes import TTL_SECONDS, NodeLease


@pytest.fixture(autouse=True)
def restore_node() -> Iterator[None]:
    yield
    ids.configure(0)  # the test process mints as node 0 again, like any unleased process


async def test_leases_are_distinct_expire_and_are_released(redis: Redis) -> None:
    leases = [NodeLease(redis) for _ in range(5)]
    nodes = [await lease.acquire() for lease in leases]
    assert len(set(nodes)) == 5 and all(1 <= n <= ids.MAX_NODE for n in nodes)
    assert ids.new_id() >> ids.SEQUENCE_BITS & ids.MAX_NODE == nodes[-1]
    for node in nodes:
        assert 0 < await redis.ttl(f"chatee:node:{node}") <= TTL_SECONDS
    for lease in leases:
        await lease.release()
    assert [await redis.exists(f"chatee:node:{n}") for n in nodes] == [0] * 5


async def test_a_lease_held_by_another_process_is_not_taken(redis: Redis) -> None:
    mine = []  # take every free node but one (leaving other processes' leases alone)
    for node in range(1, ids.MAX_NODE + 1):
        if await redis.set(f"chatee:node:{node}", "someone-else", nx=True, ex=30):
            mine.append(node)
    left = mine.pop()
    await redis.delete(f"chatee:node:{left}")
    try:
        lease = NodeLease(redis)
        assert await lease.acquire() == left
        await lease.release()
        assert not await redis.exists(f"chatee:node:{left}")
    finally:
        await redis.delete(*(f"chatee:node:{n}" for n in mine))
