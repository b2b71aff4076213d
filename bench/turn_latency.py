"""Turn latency and throughput of Chatee, next to the raw Temporal floor on the same server.

    python -m bench.turn_latency [--turns 200] [--parallel-sessions 50] [--out FILE]

Starts its own world — a Temporal dev server, Redis (the machine's at 127.0.0.1:6379, else an
embedded one), a temporary migrated SQLite database, the scripted LLM server, one `chatee worker`
and one `chatee api` process — then measures:

* chatee: sequential turns through `POST /api/v1/chat/stream`, timed from just before the request
  to the first `message.delta` and to `turn.completed`; then N sessions in parallel, each doing
  turns back to back (turns/s and latency);
* floor: a bare workflow whose update runs one no-op activity (update -> workflow task ->
  activity -> workflow task -> update result), served by an in-process worker;
* components: SQLite commit, Redis publish, a no-activity update, and where each chatee turn's
  time goes (event stream ids and workflow histories carry server-side timestamps).

Prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

# The workflow sandbox re-imports this module to run BenchFloor: let the rest through as is.
with workflow.unsafe.imports_passed_through():
    import httpx
    from redis.asyncio import Redis
    from temporalio.api.enums.v1 import EventType, TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from bench.world import start_temporal, use_redis
    from chatee.client import Client as SdkClient
    from chatee.client import MessageDelta, StepRetry, TurnCompleted, TurnEvent, TurnFailed
    from chatee.devstack import stop_process, temporal_binary
    from chatee.devtools.processes import ChateeProcess, Stack
    from chatee.migrate import upgrade
    from workflows.names import AGENTS_QUEUE, LLM_QUEUE

FLOOR_WORKFLOW_QUEUE = "bench-floor-workflows"
FLOOR_ACTIVITY_QUEUE = "bench-floor-activities"
WARMUP_TURNS = 10
FLOOR_BUDGET_MS = 10.0
PARALLEL_SHARE = 0.8
READY_TIMEOUT_S = 60
PASSWORD = "correct horse"
AGENT_FIELDS = {"system_prompt": "You are helpful.", "model": "scripted"}  # the scripted LLM


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The Temporal floor: the least a turn can cost on this server
# ---------------------------------------------------------------------------------------------


@activity.defn(name="BenchNoop")
async def noop() -> None:
    return None


@workflow.defn(name="BenchFloor")
class BenchFloor:
    """`turn`: update -> workflow task -> no-op activity -> workflow task -> result.
    `ping`: update -> workflow task -> result (what chatee's `send_message` costs)."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.update(name="turn")
    async def turn(self, n: int) -> int:
        await workflow.execute_activity(
            noop, task_queue=FLOOR_ACTIVITY_QUEUE, start_to_close_timeout=timedelta(seconds=30)
        )
        return n

    @workflow.update(name="ping")
    def ping(self, n: int) -> int:
        return n

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self._done = True


# ---------------------------------------------------------------------------------------------
# Statistics and measurements
# ---------------------------------------------------------------------------------------------


def summary(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    if len(ms) < 2:
        ms = ms * 2 or [float("nan")] * 2
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], 2),
        "p95": round(cuts[94], 2),
        "p99": round(cuts[98], 2),
        "mean": round(statistics.fmean(ms), 2),
        "n": len(seconds),
    }


def brief(seconds: list[float]) -> dict[str, float]:
    """p50 and mean in milliseconds, for components."""
    full = summary(seconds)
    return {"p50": full["p50"], "mean": full["mean"], "n": full["n"]}


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Time `n` sequential calls."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - start)
    return samples


def stream_ms(stream_id: str) -> int:
    """A Redis stream id starts with the Unix time in ms of the XADD: a free server timestamp."""
    return int(stream_id.split("-", 1)[0])


@dataclass
class Turn:
    """One chatee turn as the client saw it, with the server's event timestamps."""

    session_id: str
    wall_start: float = field(default_factory=time.time)  # just before the POST
    start: float = field(default_factory=time.perf_counter)
    first_delta_s: float = 0.0  # seconds from `start`
    completed_s: float = 0.0
    turn_id: str = ""
    last_id: str = ""
    events: dict[str, int] = field(default_factory=dict)  # first XADD ms per event name
    retried: bool = False
    reconnects: int = 0
    resends: int = 0  # 503 answers (e.g. turn-unconfirmed) resent with the same client_msg_id

    def see(self, event: TurnEvent) -> bool:
        """Take one event of this turn; True once the turn is complete."""
        elapsed = time.perf_counter() - self.start
        if isinstance(event, TurnFailed):
            raise RuntimeError(f"turn failed: {event.data}")
        if isinstance(event, MessageDelta) and not self.first_delta_s:
            self.first_delta_s = elapsed
        self.retried |= isinstance(event, StepRetry)
        self.events.setdefault(event.event, stream_ms(event.id))
        self.last_id = event.id
        self.turn_id = self.turn_id or event.turn_id
        if isinstance(event, TurnCompleted):
            self.completed_s = elapsed
            return True
        return False


class CpuMeter:
    """CPU seconds used by this process and its descendants, per command, from /proc."""

    def __init__(self, extra: dict[str, int] | None = None) -> None:
        self.extra = extra or {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def _processes(self) -> Iterator[tuple[int, int, float]]:
        """(pid, parent pid, CPU seconds so far) of every process."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()  # after "(command)"
                    cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
                    yield int(entry.name), int(fields[1]), cpu

    def sample(self) -> dict[str, float]:
        procs = {pid: (ppid, cpu) for pid, ppid, cpu in self._processes()}
        mine = {os.getpid(), *self.extra.values()}
        grew = True
        while grew:
            children = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
            mine |= children
            grew = bool(children)
        usage: dict[str, float] = {}
        for pid in mine & procs.keys():
            name = _proc_name(pid)
            usage[name] = usage.get(name, 0.0) + procs[pid][1]
        return usage

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        before, start = self.sample(), time.perf_counter()
        yield
        after, wall = self.sample(), time.perf_counter() - start
        into["wall_s"] = round(wall, 2)
        into["cpu_s"] = {
            name: round(after[name] - before.get(name, 0.0), 2)
            for name in sorted(after)
            if after[name] - before.get(name, 0.0) >= 0.01
        }


def _proc_name(pid: int) -> str:
    if pid == os.getpid():
        return "bench (client + floor worker)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in argv if a]
    if "chatee.cli" in words:
        return f"chatee {words[words.index('chatee.cli') + 1]}"
    if "chatee.devtools.llm_server" in words:
        return "scripted llm server"
    if words and words[0].endswith("temporal"):
        return "temporal dev server"
    if words and "redis-server" in words[0]:
        return "redis"
    return " ".join(words)[:40] or str(pid)


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    env: WorkflowEnvironment
    redis_url: str
    database_url: str
    llm_url: str
    stack: Stack
    redis_pid: int | None
    notes: list[str]

    @property
    def client(self) -> Client:
        return self.env.client


def chatee_env(
    env: WorkflowEnvironment, redis_url: str, database_url: str, llm_url: str
) -> dict[str, str]:
    """What a benchmark's `chatee` processes are started with: the world's services, fresh
    secrets, the scripted LLM server, warnings only."""
    return {
        "CHATEE_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CHATEE_REDIS_URL": redis_url,
        "CHATEE_DATABASE_URL": database_url,
        "CHATEE_JWT_SECRET": "bench-jwt-secret-" + uuid.uuid4().hex,
        "CHATEE_LLM_OPENAI_BASE_URL": llm_url,
        "CHATEE_LLM_OPENAI_API_KEY": "sk-bench-" + uuid.uuid4().hex,
        "CHATEE_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }


def _spawn_llm(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatee.devtools.llm_server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=(tmp / "llm.log").open("w"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server announces itself or exits
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"scripted LLM server did not start: {line!r}")
    return proc, line.split()[1] + "/v1"


def _keep_logs(tmp: Path) -> Path:
    """Copy the processes' logs out of the temporary directory that is about to go."""
    kept = Path(tempfile.mkdtemp(prefix="chatee-bench-logs-"))
    for log_file in tmp.glob("*.log"):
        shutil.copy(log_file, kept)
    return kept


async def start_worker(stack: Stack, client: Client) -> None:
    """`chatee worker` on all queues, ready once it polls the queues a turn uses."""
    proc = ChateeProcess(["worker"], stack.env, stack.tmp / "worker.log").start()
    stack.processes.append(proc)
    await wait_for_pollers(client, [proc], [AGENTS_QUEUE, LLM_QUEUE])


async def wait_for_pollers(
    client: Client, workers: list[ChateeProcess], activity_queues: list[str]
) -> None:
    """Ready once every worker process polls `chatee-agents` and `activity_queues` (at log
    level warning workers do not log "workers started", which `Stack.start_worker` waits for)."""
    queues = [(AGENTS_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)] + [
        (name, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) for name in activity_queues
    ]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        counts = []
        for name, kind in queues:
            reply = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=name),
                    task_queue_type=kind,
                )
            )
            counts.append(len({p.identity for p in reply.pollers}))
        if min(counts) >= len(workers):
            return
        for proc in workers:
            if proc.proc and proc.proc.poll() is not None:
                raise RuntimeError(f"chatee worker exited:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers never all polled ({counts} of {len(workers)})")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def world(dynamic_config: list[str]) -> AsyncIterator[World]:
    """Everything the benchmark talks to; all of it is stopped on the way out."""
    notes: list[str] = []
    server_args = [arg for kv in dynamic_config for arg in ("--dynamic-config-value", kv)]
    if dynamic_config:
        notes.append(f"Temporal dev server dynamic config: {', '.join(dynamic_config)}")
    else:
        notes.append("Temporal dev server with its default dynamic config")
    with tempfile.TemporaryDirectory(prefix="chatee-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with contextlib.AsyncExitStack() as stack:
            log("starting Temporal dev server")
            env = await start_temporal(stack, server_args)
            redis_url, redis_pid = use_redis(stack, tmp, notes)

            database_url = f"sqlite+aiosqlite:///{tmp / 'chatee.db'}"
            await asyncio.to_thread(upgrade, database_url)

            llm_proc, llm_url = await asyncio.to_thread(_spawn_llm, tmp)
            stack.callback(stop_process, llm_proc)

            chatee = Stack(env=chatee_env(env, redis_url, database_url, llm_url), tmp=tmp)
            stack.callback(chatee.stop)
            log("starting chatee worker and api")
            await start_worker(chatee, env.client)
            await asyncio.to_thread(chatee.start_api)
            try:
                yield World(tmp, env, redis_url, database_url, llm_url, chatee, redis_pid, notes)
            except Exception:
                log(f"failed; the processes' logs are kept in {_keep_logs(tmp)}")
                raise


# ---------------------------------------------------------------------------------------------
# Chatee
# ---------------------------------------------------------------------------------------------


async def signed_up(http: httpx.AsyncClient, username: str | None = None) -> SdkClient:
    """A new user, registered through the SDK on `http` (its base URL names the API; its
    connection pool may be shared by many users, and `aclose` leaves it open)."""
    client = SdkClient(str(http.base_url), http=http)
    await client.register(username or f"user-{uuid.uuid4().hex[:12]}", PASSWORD)
    return client


class Chat:
    """The benchmark's user, doing one turn at a time per session, through the SDK.

    A turn is `POST /chat/stream` read to `turn.completed` (`Client.stream_turn`). Should the
    API end the stream early (it did while its Redis client timed out reads after 5 s, shorter
    than the XREAD block), the SDK resumes as an EventSource client would: `GET
    /sessions/{id}/events` after the last event seen; those resumes are `stream_reconnects`.
    A 503 (busy or away) is resent after its Retry-After with the same `client_msg_id`, which
    the API never turns into a second turn (`resends`).
    """

    RESUME_TIMEOUT_S = 120

    def __init__(self, client: SdkClient) -> None:
        self.client = client

    async def turn(self, session_id: str, content: str) -> Turn:
        turn = Turn(session_id)
        stream = self.client.stream_turn(session_id, content, resume_timeout=self.RESUME_TIMEOUT_S)
        async for event in stream:
            if turn.see(event):
                break
        turn.reconnects, turn.resends = stream.reconnects, stream.resends
        return turn


async def chatee_sequential(chat: Chat, sessions: list[str], warmup: int, turns: int) -> list[Turn]:
    for i in range(warmup):
        await chat.turn(sessions[i % len(sessions)], f"warm up turn {i}")
    done = []
    for i in range(turns):
        session = sessions[i % len(sessions)]
        done.append(await chat.turn(session, f"benchmark turn number {i} please"))
    return done


async def chatee_parallel(
    chat: Chat, sessions: list[str], turns_each: int
) -> tuple[list[Turn], float]:
    async def one_session(session: str) -> list[Turn]:
        return [
            await chat.turn(session, f"parallel turn number {i} please") for i in range(turns_each)
        ]

    await asyncio.gather(*(chat.turn(s, "parallel warm up") for s in sessions))
    start = time.perf_counter()
    results = await asyncio.gather(*(one_session(s) for s in sessions))
    return [t for ts in results for t in ts], time.perf_counter() - start


def stream_breakdown(turns: list[Turn]) -> dict[str, dict[str, float]]:
    """Split each turn with the XADD times of its events (1 ms resolution, one clock)."""
    parts: dict[str, list[float]] = {
        "post_to_turn_started": [],
        "turn_started_to_first_delta_xadd": [],
        "first_delta_xadd_to_client": [],
        "first_delta_xadd_to_turn_completed_xadd": [],
        "turn_completed_xadd_to_client": [],
    }
    for t in turns:
        ev = t.events
        start_ms = t.wall_start * 1000
        parts["post_to_turn_started"].append(ev["turn.started"] - start_ms)
        parts["turn_started_to_first_delta_xadd"].append(ev["message.delta"] - ev["turn.started"])
        parts["first_delta_xadd_to_client"].append(
            start_ms + t.first_delta_s * 1000 - ev["message.delta"]
        )
        parts["first_delta_xadd_to_turn_completed_xadd"].append(
            ev["turn.completed"] - ev["message.delta"]
        )
        parts["turn_completed_xadd_to_client"].append(
            start_ms + t.completed_s * 1000 - ev["turn.completed"]
        )
    return {name: brief([v / 1000 for v in values]) for name, values in parts.items()}


async def history_breakdown(
    client: Client, turns: list[Turn], workflow_ids: list[str]
) -> dict[str, dict[str, float]]:
    """Split the first half of each turn with the timestamps of its workflow history."""
    by_update = {f"turn-{t.turn_id}": t for t in turns}
    parts: dict[str, list[float]] = {
        "post_to_update_workflow_task_scheduled": [],
        "update_workflow_task_schedule_to_start": [],
        "update_workflow_task_start_to_complete": [],
        "activity_schedule_to_start": [],
        "activity_start_to_turn_started_xadd": [],
        "activity_start_to_close": [],
        "activity_close_to_next_workflow_task_completed": [],
    }
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        task: dict[str, float] = {}  # the latest workflow task's times
        accepted: tuple[Turn, dict[str, float]] | None = None
        activities: dict[int, tuple[Turn, dict[str, float]]] = {}  # by scheduled event id
        for event in history.events:
            at = event.event_time.ToMicroseconds() / 1_000_000
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                task = {"scheduled": at}
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                task["started"] = at
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                task["completed"] = at
                for _, times in activities.values():
                    if "closed" in times:
                        times.setdefault("next_task_completed", at)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                meta = event.workflow_execution_update_accepted_event_attributes.accepted_request
                turn = by_update.get(meta.meta.update_id)
                accepted = (turn, dict(task)) if turn else None
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and accepted:
                turn, times = accepted
                activities[event.event_id] = (turn, {**times, "activity_scheduled": at})
                accepted = None
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sid = event.activity_task_started_event_attributes.scheduled_event_id
                if sid in activities:
                    activities[sid][1]["activity_started"] = at
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = event.activity_task_completed_event_attributes.scheduled_event_id
                if sid in activities:
                    activities[sid][1]["closed"] = at
        for turn, t in activities.values():
            if "next_task_completed" not in t or "activity_started" not in t:
                continue
            turn_started = turn.events["turn.started"] / 1000
            parts["post_to_update_workflow_task_scheduled"].append(t["scheduled"] - turn.wall_start)
            parts["update_workflow_task_schedule_to_start"].append(t["started"] - t["scheduled"])
            parts["update_workflow_task_start_to_complete"].append(t["completed"] - t["started"])
            parts["activity_schedule_to_start"].append(
                t["activity_started"] - t["activity_scheduled"]
            )
            parts["activity_start_to_turn_started_xadd"].append(
                turn_started - t["activity_started"]
            )
            parts["activity_start_to_close"].append(t["closed"] - t["activity_started"])
            parts["activity_close_to_next_workflow_task_completed"].append(
                t["next_task_completed"] - t["closed"]
            )
    return {name: brief(values) for name, values in parts.items() if values}


async def measure_chatee(
    w: World, args: argparse.Namespace, cpu: CpuMeter
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(base_url=w.stack.base, timeout=120, limits=limits) as http:
        user = await signed_up(http)
        agent = await user.create_agent("helper", **AGENT_FIELDS)
        seq_sessions = [
            (await user.create_session(agent.id)) for _ in range(args.sequential_sessions)
        ]
        par_sessions = [
            (await user.create_session(agent.id)) for _ in range(args.parallel_sessions)
        ]
        workflow_ids = [s.workflow_id for s in seq_sessions]
        chat = Chat(user)

        log(f"chatee: {args.turns} sequential turns over {len(seq_sessions)} sessions")
        seq_cpu: dict[str, Any] = {}
        with cpu.measure(seq_cpu):
            turns = await chatee_sequential(
                chat, [s.id for s in seq_sessions], WARMUP_TURNS, args.turns
            )
        log(f"chatee: {args.parallel_sessions} sessions x {args.parallel_turns} turns in parallel")
        par_cpu: dict[str, Any] = {}
        with cpu.measure(par_cpu):
            par_turns, wall = await chatee_parallel(
                chat, [s.id for s in par_sessions], args.parallel_turns
            )

    result = {
        "first_delta_ms": summary([t.first_delta_s for t in turns]),
        "completed_ms": summary([t.completed_s for t in turns]),
        "parallel": {
            "sessions": args.parallel_sessions,
            "turns": len(par_turns),
            "turns_per_s": round(len(par_turns) / wall, 2),
            "first_delta_ms": summary([t.first_delta_s for t in par_turns]),
            "completed_ms": summary([t.completed_s for t in par_turns]),
            "retried_turns": sum(t.retried for t in par_turns),
            "stream_reconnects": sum(t.reconnects for t in par_turns),
        },
        "retried_turns": sum(t.retried for t in turns),
        "stream_reconnects": sum(t.reconnects for t in turns),
    }
    analysis = {
        "sequential_stream_breakdown_ms": stream_breakdown(turns),
        "sequential_history_breakdown_ms": await history_breakdown(w.client, turns, workflow_ids),
        "parallel_stream_breakdown_ms": stream_breakdown(par_turns),
        "cpu": {"chatee_sequential": seq_cpu, "chatee_parallel": par_cpu},
    }
    sessions = [s.id for s in seq_sessions + par_sessions]
    return result, analysis, sessions


# ---------------------------------------------------------------------------------------------
# Floor
# ---------------------------------------------------------------------------------------------


async def measure_floor(
    w: World, args: argparse.Namespace, cpu: CpuMeter
) -> tuple[dict[str, Any], dict[str, Any]]:
    client = w.client
    tuning = {"max_concurrent_activities": 200, "max_concurrent_workflow_tasks": 200}  # as chatee
    workflows = Worker(client, task_queue=FLOOR_WORKFLOW_QUEUE, workflows=[BenchFloor], **tuning)
    activities = Worker(client, task_queue=FLOOR_ACTIVITY_QUEUE, activities=[noop], **tuning)
    async with workflows, activities:
        run = uuid.uuid4().hex[:8]
        n = max(args.sequential_sessions, args.parallel_sessions)
        handles = [
            await client.start_workflow(
                BenchFloor.run, id=f"bench-floor-{run}-{i}", task_queue=FLOOR_WORKFLOW_QUEUE
            )
            for i in range(n)
        ]
        seq = handles[: args.sequential_sessions]

        async def turn(i: int) -> None:
            await seq[i % len(seq)].execute_update(BenchFloor.turn, i)

        async def ping(i: int) -> None:
            await seq[i % len(seq)].execute_update(BenchFloor.ping, i)

        log(f"floor: {args.turns} sequential updates")
        seq_cpu: dict[str, Any] = {}
        await timed(WARMUP_TURNS, turn)
        with cpu.measure(seq_cpu):
            updates = await timed(args.turns, turn)
        await timed(WARMUP_TURNS, ping)
        pings = await timed(args.turns, ping)

        log(
            f"floor: {args.parallel_sessions} workflows x {args.parallel_turns} updates in parallel"
        )
        par = handles[: args.parallel_sessions]
        await asyncio.gather(*(h.execute_update(BenchFloor.turn, 0) for h in par))

        async def back_to_back(handle: Any) -> list[float]:
            samples = []
            for i in range(args.parallel_turns):
                start = time.perf_counter()
                await handle.execute_update(BenchFloor.turn, i)
                samples.append(time.perf_counter() - start)
            return samples

        par_cpu: dict[str, Any] = {}
        with cpu.measure(par_cpu):
            start = time.perf_counter()
            results = await asyncio.gather(*(back_to_back(h) for h in par))
            wall = time.perf_counter() - start
        await asyncio.gather(*(h.signal(BenchFloor.finish) for h in handles))

    par_samples = [s for r in results for s in r]
    result = {
        "update_ms": summary(updates),
        "parallel": {
            "workflows": args.parallel_sessions,
            "turns": len(par_samples),
            "turns_per_s": round(len(par_samples) / wall, 2),
            "update_ms": summary(par_samples),
        },
    }
    analysis = {
        "update_without_activity_ms": summary(pings),
        "cpu": {"floor_sequential": seq_cpu, "floor_parallel": par_cpu},
    }
    return result, analysis


# ---------------------------------------------------------------------------------------------
# Components, measured from this process with chatee's own code
# ---------------------------------------------------------------------------------------------


async def measure_components(w: World, n: int) -> dict[str, Any]:
    from chatee.bus import EventBus, once_marker, stream_key
    from chatee.db import create_engine, session_factory
    from chatee.ids import new_id
    from chatee.models import Message
    from chatee.session_store import turn_context

    components: dict[str, Any] = {}
    engine = create_engine(w.database_url)
    db = session_factory(engine)
    session_id = new_id()

    async def insert(i: int) -> None:
        async with db() as s:
            s.add(Message(id=new_id(), session_id=session_id, role="user", content=f"m {i}",
                          turn_id=new_id()))  # fmt: skip
            await s.commit()

    async def context(_: int) -> None:
        async with db() as s:
            await turn_context(s, session_id, new_id(), 50)

    try:
        components["sqlite_insert_commit"] = brief(await timed(n, insert))
        components["sqlite_turn_context_50"] = brief(await timed(n, context))
    finally:
        await engine.dispose()

    redis = Redis.from_url(w.redis_url, decode_responses=True)
    bus = EventBus(redis)
    bench_session = f"bench-{uuid.uuid4().hex[:8]}"
    data = {"turn_id": "1", "step": 0, "text": "echo: benchmark turn "}

    async def publish(i: int) -> None:
        await bus.publish(bench_session, "message.delta", data, once_key=f"{i}:x")

    async def xrevrange(_: int) -> None:
        await bus.last_id(bench_session)

    try:
        components["redis_publish_once"] = brief(await timed(n, publish))
        components["redis_last_id"] = brief(await timed(n, xrevrange))
    finally:
        keys = [stream_key(bench_session)]
        keys += [k async for k in redis.scan_iter(once_marker(bench_session, "*"), count=1000)]
        await redis.delete(*keys)
        await redis.aclose()
    return components


async def forget_events(redis_url: str, sessions: list[str]) -> None:
    """Remove the benchmark's event streams and dedupe markers from a shared Redis."""
    from chatee.bus import once_marker, stream_key

    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        wanted = {once_marker(s, "") for s in sessions}  # "chatee:once:{group}:<session>:"
        keys = [stream_key(s) for s in sessions]
        async for key in redis.scan_iter("chatee:once:*", count=1000):
            if ":".join(key.split(":", 4)[:4]) + ":" in wanted:
                keys.append(key)
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])
    finally:
        await redis.aclose()


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def machine() -> dict[str, Any]:
    """The machine, measured before the world starts (the load average shows other work)."""
    return {
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "temporal": _output(temporal_binary(), "--version"),
        "commit": _output("git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"),
    }


def busy_note(host: dict[str, Any]) -> list[str]:
    """A note when other work loaded the machine at the start (`machine()`)."""
    cores, load = host["cores"] or 1, host["loadavg_at_start"][0]
    if load <= 0.5 * cores:
        return []
    return [
        f"the machine was already busy when the run started (load average {load} on {cores} "
        "cores): figures are pessimistic"
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    host = machine()
    async with world(args.dynamic_config) as w:
        cpu = CpuMeter({"redis": w.redis_pid} if w.redis_pid else None)
        chatee, chatee_analysis, sessions = await measure_chatee(w, args, cpu)
        floor, floor_analysis = await measure_floor(w, args, cpu)
        log("components")
        components = await measure_components(w, args.component_samples)
        if w.redis_url.endswith(":6379/0"):
            await forget_events(w.redis_url, sessions)
        notes = w.notes
    notes += [
        "the floor's workers run inside the benchmark process (which is also the HTTP client); "
        "chatee's worker and API are separate processes",
        "floor and chatee workers use the same limits (200 concurrent workflow tasks and "
        "activities, default pollers, default workflow sandbox)",
        f"{args.turns} sequential turns over {args.sequential_sessions} sessions/workflows after "
        f"{WARMUP_TURNS} warm-up turns; parallel: {args.parallel_sessions} sessions/workflows x "
        f"{args.parallel_turns} turns back to back after one warm-up turn each",
        "chatee latencies run from just before POST /api/v1/chat/stream to the SSE event's "
        "arrival; floor latencies are execute_update round trips",
        "breakdowns use Redis stream ids (XADD time, 1 ms resolution) and workflow history "
        "event times; all processes share one clock",
        "cpu_s: CPU seconds per process during the phase (Redis at :6379 is not our child "
        "and is not counted)",
    ]
    notes += busy_note(host)
    if not args.dynamic_config:
        notes.append(
            "the dev server reads its history transfer queue at most 20 times/s "
            "(history.transferProcessorMaxPollRPS): a floor update waits for two such reads "
            "(activity dispatch, then the workflow task after it), a chatee first delta for one; "
            "--dynamic-config history.transferProcessorMaxPollRPS=1000 lifts it"
        )
    cut = chatee["stream_reconnects"] + chatee["parallel"]["stream_reconnects"]
    if cut:
        notes.append(
            f"{cut} times the API ended a turn's SSE stream before turn.completed; "
            "the benchmark resumed them with GET /sessions/{id}/events, as an "
            "EventSource would"
        )
    targets = {
        "first_delta_p50_within_floor_plus_10ms": chatee["first_delta_ms"]["p50"]
        <= floor["update_ms"]["p50"] + FLOOR_BUDGET_MS,
        "parallel_ge_0_8x_floor": chatee["parallel"]["turns_per_s"]
        >= PARALLEL_SHARE * floor["parallel"]["turns_per_s"],
    }
    return {
        "machine": host,
        "chatee": chatee,
        "floor": floor,
        "targets": targets,
        "analysis": {
            **chatee_analysis,
            **floor_analysis,
            "cpu": {**chatee_analysis["cpu"], **floor_analysis["cpu"]},
            "components_ms": components,
        },
        "notes": notes,
        "runtime_s": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="sequential turns timed")
    parser.add_argument("--sequential-sessions", type=int, default=4)
    parser.add_argument("--parallel-sessions", type=int, default=50)
    parser.add_argument("--parallel-turns", type=int, default=10, help="turns per session")
    parser.add_argument("--component-samples", type=int, default=200)
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pass to the Temporal dev server, e.g. history.transferProcessorMaxPollRPS=1000",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; everything started has been stopped")
        raise SystemExit(130) from None
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
