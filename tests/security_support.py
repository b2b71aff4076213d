"""Helpers shared by the security tests (auth tokens, API keys, limits, HTTP hardening)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import Stack

PROBLEM = "application/problem+json"
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and {"type", "title", "detail"} <= body.keys()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def username() -> str:
    return f"sec-{uuid.uuid4().hex[:12]}"


def ws_url(stack: Stack, token: str) -> str:
    return stack.base.replace("http://", "ws://") + f"/ws?token={token}"


async def ws_close_code(url: str) -> int | None:
    """Connect and read until the server closes; the close code it sent."""
    try:
        async with connect(url, open_timeout=10) as socket_:
            async with asyncio.timeout(10):
                while True:
                    await socket_.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    return None


async def recv_json(socket_: ClientConnection, until: str | None = None) -> dict[str, Any]:
    """The next frame (of type `until`, skipping presence and the like)."""
    while True:
        frame = json.loads(await socket_.recv())
        if until is None or frame.get("type") == until:
            return frame


async def ping(socket_: ClientConnection, ref: str = "p") -> dict[str, Any]:
    await socket_.send(json.dumps({"type": "ping", "ref": ref}))
    while True:
        frame = await recv_json(socket_)
        if frame.get("ref") == ref:
            return frame
