"""Dependency faults with real processes: Redis, MariaDB and the Temporal dev server, each a
private instance of this module's (never the machine's shared ones), are stopped and started
again while sessions and chats are active.

While one is down the API answers 503 `application/problem+json` naming it and `/readyz` is 503
with per-dependency checks; after the restart everything recovers by itself (the API and the
worker are never restarted); a message acknowledged before or after the fault is stored exactly
once, and a turn accepted before the fault completes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatee.devstack import free_port, port_open, redis_argv, stop_process, temporal_binary
from chatee.devtools.llm_server import LLMServerThread
from chatee.migrate import upgrade_async
from tests.messaging_support import WsClient
from tests.support import Api, Stack
from workflows.names import SEARCH_ATTRIBUTES

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db")
HAVE_MARIADB = INSTALL_DB is not None and Path(MARIADBD).exists()


@dataclass
class Private:
    """A dependency's server process on a fixed port and data dir: stop and start it again."""

    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{self.name} never listened"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None
        deadline = time.monotonic() + 30
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


@dataclass
class Deps:
    redis: Private
    db: Private
    temporal: Private
    stack: Stack


def _private_deps(tmp: Path) -> tuple[Private, Private, Private]:
    redis_port, db_port, t_port, t_ui = (free_port() for _ in range(4))
    redis = Private(
        "Redis",
        redis_argv(redis_port, tmp, appendonly=True),
        redis_port,
        tmp / "redis.log",
    )  # fmt: skip
    datadir = tmp / "mariadb"
    subprocess.run(
        [INSTALL_DB or "mariadb-install-db", "--no-defaults", f"--datadir={datadir}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    db = Private(
        "MariaDB",
        [MARIADBD, "--no-defaults", f"--datadir={datadir}", f"--port={db_port}",
         "--bind-address=127.0.0.1", f"--socket={tmp / 'mariadb.sock'}", "--user=root",
         "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--character-set-server=utf8mb4"],
        db_port,
        tmp / "mariadb.log",
    )  # fmt: skip
    temporal = Private(
        "Temporal",
        [temporal_binary(), "server", "start-dev", "--db-filename", str(tmp / "temporal.db"),
         "--ip", "127.0.0.1", "--port", str(t_port), "--ui-port", str(t_ui), "--headless",
         "--log-level", "error",
         *(a for n in SEARCH_ATTRIBUTES for a in ("--search-attribute", f"{n}=Keyword"))],
        t_port,
        tmp / "temporal.log",
    )  # fmt: skip
    return redis, db, temporal


@pytest.fixture(scope="module")
async def deps(
    stack_env: dict[str, str], llm: LLMServerThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deps]:
    if not HAVE_MARIADB:
        pytest.skip("no mariadbd / mariadb-install-db on this machine")
    tmp = tmp_path_factory.mktemp("faults")
    redis, db, temporal = _private_deps(tmp)
    for dep in (redis, db, temporal):
        dep.start()
    import aiomysql

    conn = await aiomysql.connect(host="127.0.0.1", port=db.port, user="root", password="")
    async with conn.cursor() as cur:
        await cur.execute("CREATE DATABASE chatee CHARACTER SET utf8mb4")
    conn.close()
    url = f"mysql+aiomysql://root@127.0.0.1:{db.port}/chatee?charset=utf8mb4"
    await upgrade_async(url)
    env = {
        **stack_env,
        "CHATEE_DATABASE_URL": url,
        "CHATEE_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "CHATEE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal.port}",
        "CHATEE_MESSAGING__RECOVERY_GRACE_SECONDS": "1",
        "CHATEE_MESSAGING__RECOVERY_INTERVAL_SECONDS": "0.5",
    }
    stack = Stack(env=env, tmp=tmp)
    stack.start_worker()
    stack.start_api()
    yield Deps(redis, db, temporal, stack)
    stack.stop()
    for dep in (temporal, db, redis):
        dep.stop()


@pytest.fixture
async def http(deps: Deps) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=deps.stack.base, timeout=60) as client:
        yield client


async def wait_ready(http: httpx.AsyncClient, within: float = 90) -> None:
    """Recovery is by itself: poll `/readyz`, nothing is restarted on the Chatee side."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError((await http.get("/readyz")).text)


async def assert_not_ready(http: httpx.AsyncClient, down: str) -> None:
    r = await http.get("/readyz")
    assert r.status_code == 503, r.text
    checks = r.json()["checks"]
    assert checks[down]["ok"] is False, checks
    assert all(c["ok"] for name, c in checks.items() if name != down), checks


def assert_unavailable(r: httpx.Response, dependency: str) -> None:
    assert r.status_code == 503, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert dependency.lower() in r.json()["detail"].lower(), r.text
    assert "Traceback" not in r.text


async def replies(api: Api, session_id: str, turns: list[str], within: float = 120) -> None:
    """Wait until every one of `turns` has its stored assistant reply."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = {m["turn_id"] for m in await api.messages(session_id) if m["role"] == "assistant"}
        if set(turns) <= done:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"turns {turns} never completed: {await api.messages(session_id)}")


async def setup(http: httpx.AsyncClient) -> tuple[Api, Api, dict[str, Any], str]:
    alice, bob = await Api.register(http), await Api.register(http)
    session = await alice.new_session(name="resilient")
    r = await alice.request(
        "POST", "/conversations", json={"type": "group", "members": [bob.user_id]}
    )
    assert r.status_code == 201, r.text
    return alice, bob, session, r.json()["id"]


async def post(api: Api, conversation: str, client_msg_id: str) -> httpx.Response:
    return await api.request(
        "POST",
        f"/conversations/{conversation}/messages",
        json={"content": f"message {client_msg_id}", "client_msg_id": client_msg_id},
    )


async def chat(api: Api, session_id: str, content: str, **extra: Any) -> httpx.Response:
    return await api.request(
        "POST", "/chat/send", json={"session_id": session_id, "content": content, **extra}
    )


async def exactly_once(api: Api, conversation: str, client_msg_ids: list[str]) -> None:
    r = await api.request("GET", f"/conversations/{conversation}/messages", params={"limit": 200})
    seen = [m["client_msg_id"] for m in r.json()["items"]]
    for cid in client_msg_ids:
        assert seen.count(cid) == 1, (cid, seen)


async def user_contents(api: Api, session_id: str) -> list[str]:
    return [m["content"] for m in await api.messages(session_id) if m["role"] == "user"]


async def test_redis_restart(deps: Deps, http: httpx.AsyncClient, llm: LLMServerThread) -> None:
    alice, bob, session, group = await setup(http)
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "slow answer across a Redis restart", "delay_ms": 1500}])
    assert (await post(alice, group, "before")).status_code == 201
    accepted = await chat(alice, session["id"], f"before the fault {marker}", client_msg_id="t1")
    assert accepted.status_code == 202, accepted.text

    deps.redis.stop()
    try:
        await assert_not_ready(http, "redis")
        assert_unavailable(await alice.request("GET", f"/presence?user_ids={bob.user_id}"), "Redis")
        refused = await chat(alice, session["id"], "sent while Redis is down")
        assert_unavailable(refused, "Redis")
    finally:
        deps.redis.start()
    await wait_ready(http)

    assert (await post(alice, group, "after")).status_code == 201
    after = await chat(alice, session["id"], "after the fault", client_msg_id="t2")
    assert after.status_code == 202, after.text
    await replies(alice, session["id"], [accepted.json()["turn_id"], after.json()["turn_id"]])
    await exactly_once(bob, group, ["before", "after"])
    contents = await user_contents(alice, session["id"])
    assert "sent while Redis is down" not in contents  # refused, so not half-written
    assert contents.count(f"before the fault {marker}") == 1


async def test_database_restart(deps: Deps, http: httpx.AsyncClient, llm: LLMServerThread) -> None:
    alice, bob, session, group = await setup(http)
    marker = uuid.uuid4().hex
    # the reply is stored while the database is down: the activity retries until it is back
    llm.llm.script(marker, [{"text": "stored after the database returns", "delay_ms": 1500}])
    assert (await post(alice, group, "before")).status_code == 201
    accepted = await chat(alice, session["id"], f"before the fault {marker}")
    assert accepted.status_code == 202, accepted.text

    sock = await WsClient(deps.stack.base, alice.token).connect()
    try:
        assert (await sock.request({"type": "ping"}))["type"] == "pong"  # attached
        deps.db.stop()
        try:
            await assert_not_ready(http, "database")
            assert_unavailable(await alice.request("GET", "/agents"), "database")
            assert_unavailable(await post(alice, group, "during"), "database")
            assert_unavailable(await chat(alice, session["id"], "during"), "database")
            frame = {"type": "message.send", "conversation_id": group, "content": "ws during"}
            refused = await sock.request({**frame, "client_msg_id": "ws-during"}, within=20)
            assert (refused["code"], refused["status"]) == ("unavailable", 503), refused
        finally:
            deps.db.start()
        await wait_ready(http)
        # the same socket works again, no reconnect needed
        ack = await sock.request({**frame, "content": "ws after", "client_msg_id": "ws-after"})
        assert ack["type"] == "message.ack", ack
    finally:
        await sock.close()

    assert (await post(alice, group, "after")).status_code == 201
    after = await chat(alice, session["id"], "after the fault")
    assert after.status_code == 202, after.text
    await replies(alice, session["id"], [accepted.json()["turn_id"], after.json()["turn_id"]])
    await exactly_once(bob, group, ["before", "after", "ws-after"])
    r = await bob.request("GET", f"/conversations/{group}/messages")
    stored = [m["client_msg_id"] for m in r.json()["items"]]
    assert "during" not in stored and "ws-during" not in stored


async def test_temporal_restart(deps: Deps, http: httpx.AsyncClient, llm: LLMServerThread) -> None:
    alice, _, session, _ = await setup(http)
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "finished after Temporal came back", "delay_ms": 3000}])
    accepted = await chat(alice, session["id"], f"before the fault {marker}")
    assert accepted.status_code == 202, accepted.text
    await asyncio.sleep(1)  # the turn's LLM activity is running now

    deps.temporal.stop()
    try:
        await assert_not_ready(http, "temporal")
        # (concurrently: each waits out the Temporal client's own retries before its 503)
        refused, kept = await asyncio.gather(
            chat(alice, session["id"], "sent while Temporal is down"),
            # with a client_msg_id the message is kept and the resend delivers it (chat.py)
            chat(alice, session["id"], "retried by the client", client_msg_id="r1"),
        )
        assert_unavailable(refused, "Temporal")
        assert_unavailable(kept, "Temporal")
    finally:
        deps.temporal.start()
    await wait_ready(http)

    resent = await chat(alice, session["id"], "retried by the client", client_msg_id="r1")
    assert resent.status_code == 202, resent.text
    turns = [accepted.json()["turn_id"], resent.json()["turn_id"]]
    await replies(alice, session["id"], turns, within=180)
    contents = await user_contents(alice, session["id"])
    assert "sent while Temporal is down" not in contents
    assert contents.count("retried by the client") == 1
    assert contents.count(f"before the fault {marker}") == 1
