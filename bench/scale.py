"""Scale: many sessions taking a turn at once through several API and worker processes,
beside the raw Temporal floor measured on the same server in the same run.

    python -m bench.scale [--sessions 1000] [--apis 2] [--workers 3] [--database mariadb|sqlite]

Starts its own world — a Temporal dev server, Redis (the machine's at 127.0.0.1:6379, else an
embedded one), a fresh migrated database (MariaDB at 127.0.0.1:3306 when reachable: SQLite
serialises every write of every process; else SQLite), the scripted LLM server, `--workers`
`chatee worker` processes (all queues each) and `--apis` `chatee api` processes — then:

* chatee: `--sessions` sessions (spread over a few users and both APIs) each take ONE turn,
  all at once, through `POST /api/v1/chat/stream` read to `turn.completed`; turns/s over the
  whole burst and per-turn latency percentiles;
* exactly once: every session has exactly one stored assistant message and one completed turn
  record (read from the database afterwards);
* floor: as many bare workflows each take one update that runs one no-op activity, all at once
  (update -> workflow task -> activity -> workflow task -> result), on workers in this process.

Prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    from sqlalchemy import func, select
    from temporalio.client import Client, WorkflowUpdateRPCTimeoutOrCancelledError
    from temporalio.service import RPCError
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from bench.turn_latency import (
        AGENT_FIELDS,
        FLOOR_ACTIVITY_QUEUE,
        FLOOR_WORKFLOW_QUEUE,
        PASSWORD,
        BenchFloor,
        Chat,
        Turn,
        _keep_logs,
        _spawn_llm,
        busy_note,
        chatee_env,
        forget_events,
        log,
        machine,
        noop,
        signed_up,
        summary,
        wait_for_pollers,
    )
    from bench.world import MARIADB, mariadb_database, start_temporal, use_redis
    from chatee.client import Client as SdkClient
    from chatee.db import create_engine, session_factory
    from chatee.devstack import free_port, port_open, stop_process
    from chatee.devtools.processes import ChateeProcess, Stack, wait_http
    from chatee.migrate import upgrade
    from chatee.models import Message
    from chatee.models import Turn as TurnRow
    from workflows.names import LLM_QUEUE, MESSAGES_QUEUE

READY_TIMEOUT_S = 300  # several processes importing at once on a small, shared machine
SETUP_PARALLELISM = 50  # sessions created at once before the burst


@dataclass
class World:
    env: WorkflowEnvironment
    redis_url: str
    database_url: str
    apis: list[Stack]
    notes: list[str]

    @property
    def client(self) -> Client:
        return self.env.client


@contextlib.asynccontextmanager
async def world(args: argparse.Namespace) -> AsyncIterator[World]:
    notes: list[str] = []
    server_args = [arg for kv in args.dynamic_config for arg in ("--dynamic-config-value", kv)]
    notes.append(
        f"Temporal dev server dynamic config: {', '.join(args.dynamic_config)}"
        if args.dynamic_config
        else "Temporal dev server with its default dynamic config"
    )
    with tempfile.TemporaryDirectory(prefix="chatee-scale-") as tmp_name:
        tmp = Path(tmp_name)
        async with contextlib.AsyncExitStack() as stack:
            log("starting Temporal dev server")
            env = await start_temporal(stack, server_args)
            redis_url, _ = use_redis(stack, tmp, notes)

            use_mariadb = args.database == "mariadb" or (
                args.database == "auto" and port_open(*MARIADB)
            )
            if use_mariadb:
                database_url = await stack.enter_async_context(mariadb_database())
                notes.append(
                    "database: MariaDB at 127.0.0.1:3306 (a fresh database, dropped after)"
                )
            else:
                database_url = f"sqlite+aiosqlite:///{tmp / 'chatee.db'}"
                notes.append("database: SQLite (one writer at a time for every process)")
            await asyncio.to_thread(upgrade, database_url)

            llm_proc, llm_url = await asyncio.to_thread(_spawn_llm, tmp)
            stack.callback(stop_process, llm_proc)

            env_vars = {
                **chatee_env(env, redis_url, database_url, llm_url),
                # workflow tasks are CPU-bound: more in flight than cores can finish within the
                # workflow task timeout makes them time out and retry (congestion collapse)
                "CHATEE_WORKERS__AGENTS__MAX_CONCURRENT_WORKFLOW_TASKS": str(args.workflow_tasks),
                "CHATEE_WORKERS__MESSAGES__MAX_CONCURRENT_WORKFLOW_TASKS": str(args.workflow_tasks),
            }
            log(f"starting {args.workers} chatee workers and {args.apis} chatee apis")
            workers = [
                ChateeProcess(["worker"], env_vars, tmp / f"worker-{i}.log").start()
                for i in range(args.workers)
            ]
            apis = []
            for i in range(args.apis):
                api = Stack(env=env_vars, tmp=tmp, api_port=free_port())
                proc = ChateeProcess(
                    ["api", "--port", str(api.api_port)], env_vars, tmp / f"api-{i}.log"
                ).start()
                api.processes.append(proc)
                apis.append(api)
            for proc in workers:
                stack.callback(proc.stop)
            for api in apis:
                stack.callback(api.stop)
            for api in apis:
                await asyncio.to_thread(
                    wait_http, f"{api.base}/readyz", api.processes[0], READY_TIMEOUT_S
                )
            await wait_for_pollers(env.client, workers, [LLM_QUEUE, MESSAGES_QUEUE])
            try:
                yield World(env, redis_url, database_url, apis, notes)
            except Exception:
                log(f"failed; the processes' logs are kept in {_keep_logs(tmp)}")
                raise


async def setup_sessions(
    pools: list[httpx.AsyncClient], n: int, users_n: int
) -> list[tuple[Chat, str]]:
    """`n` sessions over `users_n` users (one agent each); session i is created on, and takes
    its turn through, API i mod len(pools). User u registers on API u mod len(pools) and signs
    in on any other API its sessions use: one login per API (tokens of its own, refreshed
    apart), every login on that API's shared connection pool."""
    usernames = [f"user-{uuid.uuid4().hex[:12]}" for _ in range(users_n)]
    logins: dict[tuple[int, int], Chat] = {}  # (user, API) -> that user signed in there
    agents = []
    for u, username in enumerate(usernames):
        home = u % len(pools)
        logins[u, home] = Chat(await signed_up(pools[home], username))
        agent = await logins[u, home].client.create_agent("helper", **AGENT_FIELDS)
        agents.append(agent.id)
    for i in range(n):
        u, api = i % users_n, i % len(pools)
        if (u, api) not in logins:
            client = SdkClient(str(pools[api].base_url), http=pools[api])
            await client.login(usernames[u], PASSWORD)
            logins[u, api] = Chat(client)
    gate = asyncio.Semaphore(SETUP_PARALLELISM)

    async def one(i: int) -> tuple[Chat, str]:
        chat = logins[i % users_n, i % len(pools)]
        async with gate:
            for attempt in range(3):  # a keep-alive connection the server just closed
                try:
                    session = await chat.client.create_session(agents[i % users_n])
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
        return chat, session.id

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def exactly_once(database_url: str, sessions: list[str]) -> dict[str, Any]:
    """Per session: stored assistant messages and completed turn records (both must be 1)."""
    engine = create_engine(database_url)
    ids = [int(s) for s in sessions]
    try:
        async with session_factory(engine)() as db:
            replies = dict(
                (
                    await db.execute(
                        select(Message.session_id, func.count())
                        .where(Message.session_id.in_(ids), Message.role == "assistant")
                        .group_by(Message.session_id)
                    )
                ).all()
            )
            turns = dict(
                (
                    await db.execute(
                        select(TurnRow.session_id, func.count())
                        .where(TurnRow.session_id.in_(ids), TurnRow.status == "completed")
                        .group_by(TurnRow.session_id)
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    wrong_replies = {s: replies.get(s, 0) for s in ids if replies.get(s, 0) != 1}
    wrong_turns = {s: turns.get(s, 0) for s in ids if turns.get(s, 0) != 1}
    return {
        "sessions": len(ids),
        "sessions_with_exactly_one_reply": len(ids) - len(wrong_replies),
        "sessions_with_exactly_one_completed_turn": len(ids) - len(wrong_turns),
        "ok": not wrong_replies and not wrong_turns,
        "examples_of_wrong": [
            {"session_id": str(s), "replies": wrong_replies.get(s), "turns": wrong_turns.get(s)}
            for s in list({**wrong_replies, **wrong_turns})[:5]
        ],
    }


async def measure_chatee(w: World, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    limits = httpx.Limits(  # idle connections dropped before uvicorn's 5 s keep-alive ends
        max_connections=args.sessions + 10, max_keepalive_connections=200, keepalive_expiry=2
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=api.base, timeout=600, limits=limits)
            )
            for api in w.apis
        ]
        log(f"chatee: creating {args.sessions} sessions for {args.users} users")
        start = time.perf_counter()
        chats = await setup_sessions(clients, args.sessions, args.users)
        setup_s = time.perf_counter() - start

        log(f"chatee: {len(chats)} sessions take one turn each, all at once")
        start = time.perf_counter()
        results = await asyncio.gather(
            *(chat.turn(session_id, f"scale turn {i}") for i, (chat, session_id) in
              enumerate(chats)),
            return_exceptions=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
    turns = [r for r in results if isinstance(r, Turn)]
    errors = [repr(r)[:300] for r in results if not isinstance(r, Turn)]
    ids = [s for _, s in chats]
    log("chatee: counting stored replies")
    result = {
        "sessions": len(chats),
        "api_processes": len(w.apis),
        "worker_processes": args.workers,
        "session_setup_s": round(setup_s, 1),
        "burst_wall_s": round(wall, 2),
        "turns_completed": len(turns),
        "turns_per_s": round(len(turns) / wall, 2),
        "completed_ms": summary([t.completed_s for t in turns]),
        "first_delta_ms": summary([t.first_delta_s for t in turns if t.first_delta_s]),
        "retried_turns": sum(t.retried for t in turns),
        "stream_reconnects": sum(t.reconnects for t in turns),
        "resends_after_503": sum(t.resends for t in turns),
        "errors": errors[:5],
        "error_count": len(errors),
        "exactly_once": await exactly_once(w.database_url, ids),
    }
    return result, ids


async def measure_floor(w: World, n: int, workflow_tasks: int) -> dict[str, Any]:
    client = w.client
    tuning = {"max_concurrent_activities": 200, "max_concurrent_workflow_tasks": workflow_tasks}
    workflows = Worker(client, task_queue=FLOOR_WORKFLOW_QUEUE, workflows=[BenchFloor], **tuning)
    activities = Worker(client, task_queue=FLOOR_ACTIVITY_QUEUE, activities=[noop], **tuning)
    async with workflows, activities:
        run = uuid.uuid4().hex[:8]
        gate = asyncio.Semaphore(SETUP_PARALLELISM)

        async def start(i: int) -> Any:
            async with gate:
                return await client.start_workflow(
                    BenchFloor.run, id=f"bench-scale-{run}-{i}", task_queue=FLOOR_WORKFLOW_QUEUE
                )

        log(f"floor: starting {n} workflows")
        handles = await asyncio.gather(*(start(i) for i in range(n)))

        retries = 0

        async def one(handle: Any) -> float:
            """One update; when the server gives up waiting for the worker to accept it (a
            swamped worker), ask again under the same update id: Temporal runs it once."""
            nonlocal retries
            began = time.perf_counter()
            update_id = f"floor-{uuid.uuid4().hex}"
            while True:
                try:
                    await handle.execute_update(BenchFloor.turn, 0, id=update_id)
                    return time.perf_counter() - began
                except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
                    # also "workflow task in failed state": a swamped worker missed the
                    # deadlock deadline and Temporal retries the task; the client asks again
                    retries += 1
                    if retries > 20 * n:
                        raise
                    await asyncio.sleep(0.5)

        log(f"floor: {n} updates with one activity each, all at once")
        began = time.perf_counter()
        samples = await asyncio.gather(*(one(h) for h in handles))
        wall = time.perf_counter() - began
        await asyncio.gather(*(h.signal(BenchFloor.finish) for h in handles))
    return {
        "workflows": n,
        "burst_wall_s": round(wall, 2),
        "turns_per_s": round(n / wall, 2),
        "update_ms": summary(list(samples)),
        "update_rpc_retries": retries,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    host = machine()
    async with world(args) as w:
        chatee, sessions = await measure_chatee(w, args)
        try:
            floor = await measure_floor(w, args.sessions, args.workflow_tasks)
        except Exception as exc:  # keep chatee's figures; say why there is no floor
            log(f"floor failed: {exc!r}")
            floor = {"error": repr(exc)[:500], "turns_per_s": float("nan")}
        if w.redis_url.endswith(":6379/0"):
            await forget_events(w.redis_url, sessions)
        notes = w.notes
    notes += [
        f"{args.sessions} sessions over {args.users} users; session i talks to API i mod "
        f"{args.apis}; every session takes exactly one turn and all start together",
        "chatee latency: from just before POST /api/v1/chat/stream to turn.completed on the SSE "
        "stream; floor latency: an execute_update round trip",
        f"chatee: each worker process serves every queue, {args.workflow_tasks} concurrent "
        "workflow tasks and 200 activities per queue; the floor's two workers run in this "
        "benchmark process (also the HTTP client) with the same limits",
        "exactly once: assistant messages and completed turn records counted per session in "
        "the database after the burst",
    ]
    notes += busy_note(host)
    return {
        "machine": host,
        "chatee": chatee,
        "floor": floor,
        "chatee_vs_floor_throughput": round(chatee["turns_per_s"] / floor["turns_per_s"], 3),
        "all_turns_exactly_once": chatee["exactly_once"]["ok"]
        and chatee["turns_completed"] == args.sessions,
        "notes": notes,
        "runtime_s": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--users", type=int, default=20, help="sessions are spread over these")
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--workflow-tasks",
        type=int,
        default=10,
        help="max concurrent workflow tasks per worker process (chatee and floor alike)",
    )
    parser.add_argument("--database", choices=["auto", "mariadb", "sqlite"], default="auto")
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pass to the Temporal dev server, e.g. history.transferProcessorMaxPollRPS=1000",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except KeyboardInterrupt:
        log("interrupted; everything started has been stopped")
        raise SystemExit(130) from None
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not report["all_turns_exactly_once"]:
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
