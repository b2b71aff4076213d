"""WebSocket hub: many sockets on two API processes, and how fast messages reach them.

    python -m bench.ws_connections [--sockets 1000] [--broadcasts 5] [--pairs 200] [--out FILE]

Starts the same world as `bench.chat_fanout` but with two `chatee api` processes, then:

* connect: opens `--sockets` sockets (one per user, half on each process, 50 handshakes in
  flight), timing each handshake, and reads each API process's resident memory before and after;
* direct: `--pairs` private chats whose two members sit on different processes; one sends with
  `message.send`, the time until the other's `message.new` arrives (Redis pub/sub in between);
* ping: `ping` → `pong` round trips on one socket while all the others stay open;
* broadcast: one group holding every socket's user (above the workflow threshold, so it fans out
  through `MessageFanout`); for each send, the time until each socket has its `message.new`.

All clients live in this one process, next to the servers on the same cores: on a small machine
the figures are a floor on what the hub can do, not a ceiling. JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.chat_fanout import api_of, log, make_group, make_users, summary_ms, world
from tests.support import Stack


def rss_kb(stack: Stack) -> int:
    proc = stack.processes[-1].proc
    assert proc is not None
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Socket:
    """One benchmark client: records when each message id arrives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            now = time.perf_counter()
            if frame.get("type") == "message.new":
                self.arrived[frame["message"]["id"]] = now
            ref = frame.get("ref")
            if ref in self.waiters:
                self.waiters.pop(ref).set_result(frame)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        ref = uuid.uuid4().hex
        self.waiters[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({**frame, "ref": ref}))
        return await asyncio.wait_for(self.waiters[ref], 60)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def open_sockets(urls: list[str]) -> tuple[list[Socket], list[float]]:
    gate = asyncio.Semaphore(50)
    latencies: list[float] = []

    async def one(url: str) -> Socket:
        async with gate:
            start = time.perf_counter()
            ws = await connect(url, open_timeout=60, max_size=None)
            latencies.append(time.perf_counter() - start)
            return Socket(ws)

    return list(await asyncio.gather(*(one(u) for u in urls))), latencies


async def wait_arrival(sockets: list[Socket], message_id: str, within: float = 120) -> None:
    deadline = time.perf_counter() + within
    while any(message_id not in s.arrived for s in sockets):
        if time.perf_counter() > deadline:
            missing = sum(message_id not in s.arrived for s in sockets)
            raise TimeoutError(f"{missing} sockets never got {message_id}")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "sockets": args.sockets,
    }
    async with world(api_count=2) as w:
        a, b = w.apis
        http = [httpx.AsyncClient(base_url=s.base, timeout=120) for s in (a, b)]
        users = await make_users(w.database_url, args.sockets)
        apis = [api_of(http[n % 2], u, w.secret) for n, u in enumerate(users)]
        conversation_id = await make_group(apis[0], users[1:])
        ws_base = [s.base.replace("http://", "ws://") + "/ws" for s in (a, b)]
        urls = [f"{ws_base[n % 2]}?token={api.token}&after=0" for n, api in enumerate(apis)]

        before = {"api_a": rss_kb(a), "api_b": rss_kb(b)}
        log(f"opening {len(urls)} sockets")
        start = time.perf_counter()
        sockets, handshakes = await open_sockets(urls)
        opened = time.perf_counter() - start
        await asyncio.sleep(1)
        after = {"api_a": rss_kb(a), "api_b": rss_kb(b)}
        grown = sum(after.values()) - sum(before.values())
        report["connect"] = {
            "total_s": round(opened, 2),
            "handshake_ms": summary_ms(handshakes),
            "rss_kb_before": before,
            "rss_kb_after": after,
            "rss_kb_per_socket": round(grown / len(sockets), 1),
        }

        log(f"{args.pairs} direct messages across processes")
        direct = []
        pairs = min(args.pairs, len(sockets) // 2)
        for n in range(pairs):
            sender, receiver = apis[2 * n], apis[2 * n + 1]  # on A and on B
            r = await sender.request(
                "POST", "/conversations", json={"type": "private", "members": [receiver.user_id]}
            )
            chat = r.json()["id"]
            t = time.perf_counter()
            ack = await sockets[2 * n].request(
                {"type": "message.send", "conversation_id": chat, "content": f"hi {n}",
                 "client_msg_id": uuid.uuid4().hex}
            )  # fmt: skip
            await wait_arrival([sockets[2 * n + 1]], ack["id"])
            direct.append(sockets[2 * n + 1].arrived[ack["id"]] - t)
        report["direct_send_to_receive_ms"] = summary_ms(direct)

        log("ping round trips")
        pings = []
        for _ in range(200):
            t = time.perf_counter()
            await sockets[0].request({"type": "ping"})
            pings.append(time.perf_counter() - t)
        report["ping_ms"] = summary_ms(pings)

        log(f"{args.broadcasts} broadcasts to {len(sockets)} sockets")
        rounds = []
        for n in range(args.broadcasts):
            t = time.perf_counter()
            r = await apis[0].request(
                "POST",
                f"/conversations/{conversation_id}/messages",
                json={"content": f"broadcast {n}", "client_msg_id": uuid.uuid4().hex},
            )
            acked = time.perf_counter() - t
            message_id = r.json()["id"]
            await wait_arrival(sockets, message_id)
            arrivals = [s.arrived[message_id] - t for s in sockets]
            rounds.append(
                {
                    "ack_ms": round(acked * 1000, 1),
                    "receive_ms": summary_ms(arrivals),
                }
            )
        report["broadcast"] = rounds
        await asyncio.gather(*(s.close() for s in sockets))
        for client in http:
            await client.aclose()
        report["notes"] = w.notes
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
