"""Helpers for the messaging tests: a WebSocket client that keeps its inbox the way an app
would, and HTTP shortcuts for conversations and sync."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import struct
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.models import User
from chatee.security import issue_token
from tests.support import Api

_refs = itertools.count(1)


class WsClient:
    """One real socket. Tracks every `message.new` by `inbox_seq`; answers a `resync` error
    with `sync` frames until `has_more` is false, as the protocol asks. `dupes` and `gaps`
    record any violation of "in order, exactly once"."""

    def __init__(self, base: str, token: str, name: str = "") -> None:
        self.url = base.replace("http://", "ws://") + "/ws"
        self.token = token
        self.name = name
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.inbox: dict[int, dict[str, Any]] = {}
        self.last = 0
        self.dupes: list[int] = []
        self.gaps: list[tuple[int, int]] = []
        self.frames: list[dict[str, Any]] = []
        self.resyncs = 0
        self.started = False  # without `after`, the first message sets the starting point
        self.changed = asyncio.Condition()

    async def connect(self, after: int | None = None, **params: str) -> WsClient:
        query = {"token": self.token, **params}
        if after is not None:
            query["after"] = str(after)
            self.last = max(self.last, after)
            self.started = True
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        self.ws = await connect(f"{self.url}?{qs}", max_size=None, open_timeout=10)
        self.reader = asyncio.create_task(self._read())
        return self

    async def reconnect(self, base: str) -> None:
        """Another API process, resuming after the last inbox_seq held."""
        await self.close()
        self.url = base.replace("http://", "ws://") + "/ws"
        await self.connect(after=self.last)

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                self.frames.append(frame)
                await self._handle(frame)
                async with self.changed:
                    self.changed.notify_all()

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("message.new", "inbox.event"):  # every inbox entry, whatever its kind
            self._record(frame)
        elif kind == "sync":
            self.started = True
            for item in frame["items"]:
                self._record(item)
            self.last = max(self.last, frame["next_after"])
            if frame["has_more"]:
                await self.send({"type": "sync", "after": self.last})
        elif kind == "error" and frame.get("code") == "resync":
            self.resyncs += 1
            await self.send({"type": "sync", "after": self.last})

    def _record(self, item: dict[str, Any]) -> None:
        seq = item["inbox_seq"]
        if seq in self.inbox:
            self.dupes.append(seq)
            return
        if self.started and seq != self.last + 1:
            self.gaps.append((self.last, seq))
        self.started = True
        self.inbox[seq] = item
        self.last = max(self.last, seq)

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(frame))

    async def request(self, frame: dict[str, Any], within: float = 30) -> dict[str, Any]:
        """Send a frame with a fresh `ref` and return the reply carrying it."""
        ref = f"r{next(_refs)}"
        await self.send({**frame, "ref": ref})
        return await self.wait_for(lambda f: f.get("ref") == ref, within)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 30
    ) -> dict[str, Any]:
        seen = 0

        def check() -> dict[str, Any] | None:
            nonlocal seen
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            return None

        async with asyncio.timeout(within), self.changed:
            while (found := check()) is None:
                await self.changed.wait()
        return found

    async def wait_inbox(self, count: int, within: float = 30) -> None:
        async with asyncio.timeout(within), self.changed:
            while len(self.inbox) < count:
                await self.changed.wait()

    def message_ids(self) -> list[str]:
        return [self.inbox[s]["message"]["id"] for s in sorted(self.inbox) if self._is_new(s)]

    def _is_new(self, seq: int) -> bool:
        return self.inbox[seq].get("kind", "message") == "message"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        self.ws = self.reader = None


async def group(owner: Api, members: list[Api], title: str = "team") -> dict[str, Any]:
    r = await owner.request(
        "POST",
        "/conversations",
        json={"type": "group", "title": title, "members": [m.user_id for m in members]},
    )
    assert r.status_code == 201, r.text
    return r.json()


async def send(api: Api, conversation_id: str, content: str, client_msg_id: str | None = None):
    r = await api.request(
        "POST",
        f"/conversations/{conversation_id}/messages",
        json={"content": content, "client_msg_id": client_msg_id or uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return r.json()


async def sync_all(api: Api, after: int = 0) -> list[dict[str, Any]]:
    """Every inbox entry after `after`, following `next_after` while `has_more`."""
    items: list[dict[str, Any]] = []
    while True:
        r = await api.request("GET", "/sync", params={"after": after, "limit": 200})
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        after = page["next_after"]
        if not page["has_more"]:
            return items


async def all_messages(api: Api, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's messages, oldest first."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        r = await api.request("GET", f"/conversations/{conversation_id}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if page["next_before_seq"] is None:
            return list(reversed(items))
        params["before_seq"] = page["next_before_seq"]


class RawSocketClient:
    """A WebSocket client on a bare socket, for a client that truly stops reading: client
    libraries keep draining the socket into memory, this one leaves bytes in the kernel (with
    a tiny receive window) until the test reads them."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_json(self) -> dict[str, Any]:
        """The next text message (pings and other control frames are skipped)."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            size = b1 & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(size)
            opcode = b0 & 0x0F
            if opcode >= 8:  # control frame
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def send_json(self, frame: dict[str, Any]) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def close(self) -> None:
        self.sock.close()


async def quick_users(
    database_url: str, secret: str, clients: list[httpx.AsyncClient], count: int
) -> list[Api]:
    """Users made straight in the database with a token each: registering over HTTP would
    spend the test's time hashing passwords (registration has its own tests)."""
    engine = create_engine(database_url)
    ids = [new_id() for _ in range(count)]
    async with session_factory(engine)() as db:
        db.add_all(User(id=i, username=f"u-{i}", password_hash="-") for i in ids)
        await db.commit()
    await engine.dispose()
    return [
        Api(clients[n % len(clients)], issue_token(uid, secret, 3600), str(uid))
        for n, uid in enumerate(ids)
    ]
