"""Abuse limits through a real `chatee api` with small budgets: per-IP and per-user sliding
windows (429 + Retry-After, then recovery), WebSocket frame rate and size, message length on
every path that takes content, sessions per user, members per group."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.security_support import assert_problem, ping, recv_json, ws_url
from tests.support import Api, Stack

WINDOW = 3
LIMITS = {
    "CHATEE_SECURITY__RATE_WINDOW_SECONDS": str(WINDOW),
    "CHATEE_SECURITY__IP_REQUESTS_PER_WINDOW": "40",
    "CHATEE_SECURITY__AUTH_REQUESTS_PER_WINDOW": "3",
    "CHATEE_SECURITY__USER_WRITES_PER_WINDOW": "12",
    "CHATEE_SECURITY__WS_MAX_FRAME_BYTES": "4096",  # uvicorn closes frames over 4x this
    "CHATEE_SECURITY__WS_MESSAGES_PER_SECOND": "2",
    "CHATEE_SECURITY__WS_MESSAGE_BURST": "3",
    "CHATEE_SECURITY__MAX_SESSIONS_PER_USER": "2",
    "CHATEE_LIMITS__MAX_MESSAGE_BYTES": "1024",
    "CHATEE_MESSAGING__MAX_GROUP_MEMBERS": "3",
}


@pytest.fixture(scope="module")
def tight(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(env={**stack_env, **LIMITS}, tmp=tmp_path_factory.mktemp("limits"))
    running.start_api()
    yield running
    running.stop()


@pytest.fixture
async def http(tight: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client behind its own address: uvicorn takes `X-Forwarded-For` from a local proxy,
    so every test gets a fresh per-IP budget (loopback itself is exempt by default)."""
    address = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
    async with httpx.AsyncClient(
        base_url=tight.base, timeout=30, headers={"X-Forwarded-For": address}
    ) as client:
        yield client


def assert_429(r: httpx.Response) -> int:
    assert_problem(r, 429)
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= WINDOW
    return retry


async def login(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"username": "nobody-here", "password": "wrong password"}
    return await http.post("/api/v1/auth/login", json=body, headers=headers)


async def until_429(send: Callable[[], Awaitable[httpx.Response]], budget: int) -> list[int]:
    """Send until refused; the statuses before the 429. At least `budget` get through (more
    only if the window slid on a slow machine), and the 429 does come."""
    statuses: list[int] = []
    for _ in range(3 * budget + 5):
        r = await send()
        if r.status_code == 429:
            assert_429(r)
            assert len(statuses) >= budget, statuses
            return statuses
        statuses.append(r.status_code)
    raise AssertionError(f"never limited: {statuses}")


async def test_auth_endpoints_have_a_stricter_budget_per_ip_that_recovers(
    http: httpx.AsyncClient,
) -> None:
    assert set(await until_429(lambda: login(http), 3)) == {401}
    retry = assert_429(await login(http))
    # a different address is not affected; other routes still have room on this one
    assert_problem(await login(http, {"X-Forwarded-For": "198.19.1.1"}), 401)
    assert (await http.get("/api/v1/agents")).status_code == 401
    await asyncio.sleep(retry + 0.2)  # the window slides: room again
    assert_problem(await login(http), 401)


async def test_every_request_counts_against_the_ip_budget(http: httpx.AsyncClient) -> None:
    assert set(await until_429(lambda: http.get("/api/v1/agents"), 40)) == {401}
    retry = assert_429(await http.get("/api/v1/agents"))
    assert (await http.get("/healthz")).status_code == 200  # health is never limited
    await asyncio.sleep(retry + 0.2)
    assert (await http.get("/api/v1/agents")).status_code == 401


async def test_writes_have_a_budget_per_user(http: httpx.AsyncClient, tight: Stack) -> None:
    user = await Api.register(http)
    names = (f"a{i}" for i in range(100))
    made = await until_429(lambda: user.request("POST", "/agents", json={"name": next(names)}), 12)
    assert set(made) == {201}
    retry = assert_429(await user.request("POST", "/agents", json={"name": "over"}))
    assert (await user.request("GET", "/agents")).status_code == 200  # reads are not writes
    # another user (from another address) writes freely
    async with httpx.AsyncClient(
        base_url=tight.base, headers={"X-Forwarded-For": "198.19.2.2"}
    ) as elsewhere:
        other = await Api.register(elsewhere)
        assert (await other.request("POST", "/agents", json={"name": "b"})).status_code == 201
    await asyncio.sleep(retry + 0.2)
    assert (await user.request("POST", "/agents", json={"name": "again"})).status_code == 201
    names = {a["name"] for a in (await user.request("GET", "/agents")).json()}
    assert "over" not in names and len(names) == len(made) + 1  # refused writes wrote nothing


async def test_websocket_frame_rate_and_size(http: httpx.AsyncClient, tight: Stack) -> None:
    user = await Api.register(http)
    async with connect(ws_url(tight, user.token), open_timeout=10, max_size=None) as socket_:
        for i in range(12):
            await socket_.send(json.dumps({"type": "ping", "ref": i}))
        frames = [await recv_json(socket_) for _ in range(12)]
        pongs = [f for f in frames if f["type"] == "pong"]
        limited = [f for f in frames if f.get("code") == "rate_limited"]
        assert len(pongs) + len(limited) == 12 and len(pongs) >= 3 and limited
        assert limited[0]["type"] == "error" and limited[0]["retry_after_ms"] > 0
        await asyncio.sleep(1.6)  # the bucket refills: the socket is still usable
        assert (await ping(socket_, "after-rate"))["type"] == "pong"

        await socket_.send(json.dumps({"type": "ping", "pad": "x" * 5000}))
        error = await recv_json(socket_, "error")
        assert error["code"] == "too-large" and error["status"] == 413
        await asyncio.sleep(1)
        assert (await ping(socket_, "after-size"))["type"] == "pong"

        # far over the limit: the server never buffers it and closes with 1009 (too big)
        await socket_.send("x" * (4 * 4096 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await socket_.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_message_length_is_enforced_on_every_path(
    http: httpx.AsyncClient, tight: Stack
) -> None:
    user = await Api.register(http)
    friend = await Api.register(http)
    session = await user.new_session()
    too_long = "é" * 513  # 1026 bytes of UTF-8, 513 characters
    body = {"session_id": session["id"], "content": too_long}
    assert_problem(await user.request("POST", "/chat/send", json=body), 413)
    assert_problem(await user.request("POST", "/chat/stream", json=body), 413)
    reply = {"request_id": "1-1", "content": too_long}
    assert_problem(
        await user.request("POST", f"/sessions/{session['id']}/human-reply", json=reply), 413
    )
    assert await user.messages(session["id"]) == []

    r = await user.request(
        "POST", "/conversations", json={"type": "private", "members": [friend.user_id]}
    )
    assert r.status_code == 201, r.text
    chat = r.json()["id"]
    path = f"/conversations/{chat}/messages"
    assert_problem(await user.request("POST", path, json={"content": too_long}), 413)
    async with connect(ws_url(tight, user.token), open_timeout=10) as socket_:
        frame = {"type": "message.send", "conversation_id": chat, "content": too_long, "ref": 1}
        await socket_.send(json.dumps(frame))
        error = await recv_json(socket_, "error")
        assert error["code"] == "too-large" and error["ref"] == 1
    assert (await user.request("GET", path)).json()["items"] == []


async def test_open_sessions_per_user_and_members_per_group(
    http: httpx.AsyncClient, tight: Stack
) -> None:
    user = await Api.register(http)
    agent = await user.create_agent()
    first = await user.create_session(agent["id"])
    await user.create_session(agent["id"])
    r = await user.request("POST", "/sessions", json={"agent_id": agent["id"]})
    assert assert_problem(r, 409)["type"] == "/problems/too-many-sessions"
    assert (await user.request("POST", f"/sessions/{first['id']}/close")).status_code == 202
    await user.create_session(agent["id"])  # closing one made room

    async with httpx.AsyncClient(base_url=tight.base, timeout=30) as local:  # loopback: exempt
        others = [await Api.register(local) for _ in range(3)]  # from the auth budget per IP
    ids = [o.user_id for o in others]
    r = await user.request("POST", "/conversations", json={"type": "group", "members": ids})
    assert_problem(r, 409)
    r = await user.request("POST", "/conversations", json={"type": "group", "members": ids[:2]})
    assert r.status_code == 201, r.text
    group = r.json()["id"]
    r = await user.request("POST", f"/conversations/{group}/members", json={"members": ids[2:]})
    assert_problem(r, 409)
    members = (await user.request("GET", f"/conversations/{group}/members")).json()
    assert len(members) == 3
