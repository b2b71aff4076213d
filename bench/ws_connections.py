"""Idle WebSocket connections on one API process: how many it holds, and memory per socket.

    python -m bench.ws_connections [--sockets 10000] [--steps 4] [--client-procs 4]
                                   [--apis 1] [--out FILE]

The scenario of issue #5: open `--sockets` sockets (one user each, token auth, no `after`) to ONE
`chatee api` process from `--client-procs` separate load-generator processes (the generators of
`bench.chat_fanout`: spawned, asyncio on uvloop, 50 handshakes in flight per process), in
`--steps` equal slices. After each slice, and a short settle, it reads the API process's
resident memory (VmRSS from /proc) — per-socket cost = RSS growth / sockets, overall and per
slice (the marginal cost, free of start-up effects). Then every socket sends `ping` and must get
its `pong` (a socket the server silently dropped would not), the sockets idle for `--idle`
seconds (the server's keepalive pings run meanwhile) and RSS is read again.

The open-files limit is raised to the hard limit first (the API process inherits it). The
world is the one of `bench.chat_fanout`: Temporal dev server, Redis (machine or embedded), a
fresh SQLite file; no worker. JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.chat_fanout import (
    Generators,
    Spec,
    emit,
    log,
    make_users,
    proc_cpu_s,
    proc_rss_kb,
    raise_nofile,
    token_for,
    world,
)


async def settle_rss(pid: int, seconds: float = 3.0) -> int:
    """RSS once the process has finished the connection work (two equal reads, or timeout)."""
    deadline = time.monotonic() + seconds * 4
    last = proc_rss_kb(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(seconds / 3)
        now = proc_rss_kb(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


async def run(args: argparse.Namespace) -> dict[str, Any]:
    hard = raise_nofile()
    if hard < args.sockets + 1000:
        log(f"open-files hard limit {hard} is low for {args.sockets} sockets")
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
            "nofile_limit": hard,
        },
        "scenario": {
            "sockets": args.sockets,
            "api_processes": args.apis,
            "client_processes": args.client_procs,
            "steps": args.steps,
            "clients_offer_deflate": args.client_deflate,
        },
    }
    async with world(api_count=args.apis) as w:
        users = await make_users(w.database_url, args.sockets)
        ws_bases = [a.base.replace("http://", "ws://") + "/ws" for a in w.apis]
        per_proc: list[list[Spec]] = [[] for _ in range(args.client_procs)]
        for n, u in enumerate(users):
            url = f"{ws_bases[n % len(ws_bases)]}?token={token_for(u, w.secret)}"
            per_proc[n % args.client_procs].append(Spec(u, url))
        pids = [w.api_pid(i) for i in range(len(w.apis))]
        gens = Generators(per_proc, concurrency=50, deflate=args.client_deflate)
        try:
            await gens.all("ping")  # generators up (no sockets yet)
            base = sum([await settle_rss(p) for p in pids])
            report["api_rss_kb_idle"] = base
            slices = []
            previous, opened = base, 0
            cpu0 = sum(proc_cpu_s(p) for p in pids)
            for k in range(args.steps):
                args_per_proc = [
                    {"start": size * k // args.steps, "stop": size * (k + 1) // args.steps}
                    for size in gens.sizes
                ]
                log(f"slice {k + 1}/{args.steps}: opening sockets")
                start = time.perf_counter()
                replies = await gens.ask("open", args_per_proc)
                elapsed = time.perf_counter() - start
                total = sum(r["open"] for r in replies)
                failures: dict[str, int] = {}
                for r in replies:
                    for name, count in r["failures"].items():
                        failures[name] = failures.get(name, 0) + count
                rss = sum([await settle_rss(p) for p in pids])
                added = total - opened
                slices.append(
                    {
                        "sockets": total,
                        "opened": added,
                        "open_s": round(elapsed, 2),
                        "handshakes_per_s": round(added / elapsed, 1) if elapsed else None,
                        "failures": failures,
                        "api_rss_kb": rss,
                        "kib_per_socket_this_slice": round((rss - previous) / max(added, 1), 1),
                        "kib_per_socket_overall": round((rss - base) / max(total, 1), 1),
                    }
                )
                log(f"  -> {total} open, {slices[-1]['kib_per_socket_overall']} KiB/socket")
                previous, opened = rss, total
            report["connect_cpu_s"] = round(sum(proc_cpu_s(p) for p in pids) - cpu0, 2)
            report["slices"] = slices
            log("ping on every socket")
            pongs = await gens.all("ping")
            report["pongs"] = sum(p["pongs"] for p in pongs)
            log(f"idle {args.idle} s")
            cpu1 = sum(proc_cpu_s(p) for p in pids)
            await asyncio.sleep(args.idle)
            report["idle"] = {
                "seconds": args.idle,
                "api_cpu_s": round(sum(proc_cpu_s(p) for p in pids) - cpu1, 2),
                "api_rss_kb": sum(proc_rss_kb(p) for p in pids),
            }
            pongs = await gens.all("ping")
            report["pongs_after_idle"] = sum(p["pongs"] for p in pongs)
            closes: dict[str, int] = {}
            for p in pongs:
                for name, count in p["errors"].items():
                    closes[name] = closes.get(name, 0) + count
            report["client_side_closes"] = closes
            held = report["pongs_after_idle"]
            report["sockets_held"] = held
            report["kib_per_socket"] = round(
                (report["idle"]["api_rss_kb"] - base) / max(held, 1), 1
            )
        finally:
            await gens.stop()
        report["notes"] = w.notes
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--apis", type=int, default=1)
    parser.add_argument("--idle", type=float, default=25, help="seconds idle before re-pinging")
    parser.add_argument(
        "--client-deflate",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do (the server may decline)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    main()
