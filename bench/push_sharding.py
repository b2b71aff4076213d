"""What an API process spends on pushes that are not for its users.

    python -m bench.push_sharding [--rates 200,500] [--seconds 10] [--redis single,cluster]
                                  [--before PATH]

Four API processes. The people chatting (groups of 10) have their sockets on the first; each
of the other three holds one socket of someone who is in none of those groups. Sends go to the
first process over REST at a fixed rate, and every API process's CPU seconds are read from
/proc over each step. With pushes on one channel, every process reads every push; with pushes
sharded by user bucket, the other three hear nothing. `--before PATH` runs the same steps on
the code checked out at PATH as well (put first on the API processes' PYTHONPATH), so before
and after come from one sitting. `--redis cluster` runs on a 3+3 Redis Cluster started from
`redis-server`. Prints one JSON document on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.chat_fanout import log, make_group, make_users, proc_cpu_s, token_for, world
from chatee.devtools.redis_cluster import start_redis_cluster

APIS = 4
GROUPS = 4
GROUP_SIZE = 10


async def listen(url: str, token: str, counter: list[int]) -> None:
    """A socket that counts the frames it gets."""
    async with connect(f"{url}/ws?token={token}", max_size=None) as ws:
        async for _ in ws:
            counter[0] += 1


async def send_at(
    http: httpx.AsyncClient,
    groups: list[tuple[str, list[int]]],
    tokens: dict[int, str],
    rate: float,
    seconds: float,
    tag: str,
) -> int:
    """Open-loop sends at `rate` per second for `seconds`, each from a random member of a group
    in turn; how many were stored."""
    pacing = asyncio.Semaphore(128)

    async def one(n: int) -> bool:
        async with pacing:
            group, members = groups[n % len(groups)]
            r = await http.post(
                f"/api/v1/conversations/{group}/messages",
                json={"content": f"m{n}", "client_msg_id": f"{tag}-{n}"},
                headers={"Authorization": f"Bearer {tokens[random.choice(members)]}"},
            )
            return r.status_code == 201

    start, tasks = time.perf_counter(), []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    return sum(await asyncio.gather(*tasks))


async def measure(
    code: str, redis_mode: str, rates: list[float], seconds: float, extra: dict[str, str]
) -> dict[str, Any]:
    with contextlib.ExitStack() as cleanup:
        env = dict(extra)
        if redis_mode == "cluster":
            cluster = start_redis_cluster(Path(tempfile.mkdtemp(prefix="chatee-bench-cluster-")))
            cleanup.callback(cluster.stop)
            env |= {"CHATEE_REDIS_URL": cluster.url, "CHATEE_REDIS_CLUSTER": "true"}
        async with world(api_count=APIS, extra_env=env) as w:
            users = await make_users(w.database_url, GROUPS * GROUP_SIZE + APIS - 1)
            chatty, idle = users[: GROUPS * GROUP_SIZE], users[GROUPS * GROUP_SIZE :]
            tokens = {u: token_for(u, w.secret) for u in users}
            first = w.apis[0].base
            async with httpx.AsyncClient(base_url=first, timeout=30) as http:
                groups = []
                for g in range(GROUPS):
                    members = chatty[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
                    groups.append(
                        (await make_group(http, tokens[members[0]], members[1:]), members)
                    )
                counters = [[0] for _ in users]
                ws_base = [a.base.replace("http://", "ws://") for a in w.apis]
                sockets = [
                    asyncio.create_task(listen(ws_base[0], tokens[u], counters[i]))
                    for i, u in enumerate(chatty)
                ]
                sockets += [
                    asyncio.create_task(
                        listen(ws_base[n + 1], tokens[u], counters[len(chatty) + n])
                    )
                    for n, u in enumerate(idle)
                ]
                await asyncio.sleep(2)  # every socket attached
                pids = [w.api_pid(n) for n in range(APIS)]
                steps = []
                for rate in rates:
                    received_before = sum(c[0] for c in counters[: len(chatty)])
                    cpu_before = [proc_cpu_s(p) for p in pids]
                    start = time.perf_counter()
                    sent = await send_at(http, groups, tokens, rate, seconds, f"{code}-{rate}")
                    wall = time.perf_counter() - start
                    cpu = [proc_cpu_s(p) - b for p, b in zip(pids, cpu_before, strict=True)]
                    log(f"{code} {redis_mode} {rate}/s: cpu {[round(c, 2) for c in cpu]}")
                    steps.append(
                        {
                            "offered_per_s": rate,
                            "sent": sent,
                            "deliveries": sum(c[0] for c in counters[: len(chatty)])
                            - received_before,
                            "wall_s": round(wall, 2),
                            "api_cpu_percent": {
                                "with_the_chatting_sockets": round(100 * cpu[0] / wall, 1),
                                "others_one_idle_socket_each": [
                                    round(100 * c / wall, 1) for c in cpu[1:]
                                ],
                            },
                        }
                    )
                for task in sockets:
                    task.cancel()
                await asyncio.gather(*sockets, return_exceptions=True)
            return {"code": code, "redis": redis_mode, "steps": steps, "notes": w.notes}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    runs = []
    codes = [("after", {})] + (
        [("before", {"PYTHONPATH": str(args.before)})] if args.before else []
    )
    for redis_mode in args.redis.split(","):
        for code, env in codes:
            runs.append(await measure(code, redis_mode, rates, args.seconds, env))
    return {
        "benchmark": "push_sharding",
        "apis": APIS,
        "groups": f"{GROUPS} x {GROUP_SIZE}",
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,500")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--redis", default="single,cluster")
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = json.dumps(asyncio.run(run(args)), indent=2)
    if args.out:
        args.out.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
