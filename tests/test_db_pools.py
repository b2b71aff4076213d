"""Database pools and the read replica (README "Running at scale"): the sizes configured per
process kind are the ones the engine gets, a full pool makes a caller wait and then fail instead
of opening more connections, and reads that tolerate lag go to the replica while writes and
reads-after-write stay on the primary."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import text

from chatee import temporal
from chatee.config import Settings
from chatee.devtools.processes import Stack
from chatee.migrate import upgrade_async
from chatee.services import Services
from tests.support import signed_up

POOLS = {
    "api": {"size": 3, "max_overflow": 2, "timeout_seconds": 7, "recycle_seconds": 99},
    "worker": {"size": 2, "max_overflow": 1, "timeout_seconds": 5, "recycle_seconds": 77},
}


@pytest.mark.parametrize("role", ["api", "worker"])
async def test_each_process_kind_gets_its_configured_pool(database_url: str, role: str) -> None:
    settings = Settings(
        database_url=database_url, redis_url="redis://127.0.0.1:1/0", database={**POOLS}
    )
    svc = Services.create(settings, await temporal.connect(settings, lazy=True), role=role)
    try:
        pool, want = svc.engine.pool, POOLS[role]
        assert pool.size() == want["size"]
        assert pool._max_overflow == want["max_overflow"]  # noqa: SLF001 - no public reader
        assert pool._timeout == want["timeout_seconds"]  # noqa: SLF001
        assert pool._recycle == want["recycle_seconds"]  # noqa: SLF001
        assert svc.reader is svc.sessionmaker  # no replica configured: reads use the primary
    finally:
        await svc.close()


async def test_a_full_pool_waits_then_fails_rather_than_open_more(mariadb_url: str | None) -> None:
    if mariadb_url is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    pool = {"size": 1, "max_overflow": 0, "timeout_seconds": 0.5}
    settings = Settings(
        database_url=mariadb_url, redis_url="redis://127.0.0.1:1/0", database={"api": pool}
    )
    svc = Services.create(settings, await temporal.connect(settings, lazy=True))
    try:
        async with svc.engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(Exception, match="QueuePool limit of size 1 overflow 0"):
                async with svc.engine.connect() as second:
                    await second.execute(text("SELECT 1"))
        async with svc.engine.connect() as again:  # released: the next caller gets it
            assert (await again.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await svc.close()


async def test_listings_read_the_replica_and_writes_stay_on_the_primary(
    isolated_stacks: Callable[[dict[str, str]], Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # a "replica" that never receives the primary's writes: what a listing shows tells which
    # database answered it
    replica = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('replica') / 'replica.db'}"
    await upgrade_async(replica)
    stack = isolated_stacks({"CHATEE_DATABASE__REPLICA_URL": replica, "CHATEE_LOG_JSON": "true"})
    stack.start_api()
    async with await signed_up(stack.base) as chatee:
        created = await chatee.create_agent("lagging")
        # read-after-write (the agent itself) comes from the primary (the replica would say 404)
        assert (await chatee.agent(created.id)).id == created.id
        # the listing tolerates lag: it comes from the replica, which has not seen the write
        assert await chatee.agents() == []
    budget = [json.loads(line) for line in stack.logs().splitlines() if "database pool" in line]
    assert budget and budget[0]["replica"] is True and budget[0]["most_connections"] == 40
