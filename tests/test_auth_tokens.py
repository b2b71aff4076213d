"""Access and refresh tokens through a real `chatee api`: rotation, reuse detection, logout
(HTTP, SSE, WebSocket, /mcp). Expiry: tests/test_http_hardening.py (its API has a short TTL)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.security_support import (
    MCP_HEADERS,
    MCP_INIT,
    assert_problem,
    bearer,
    ping,
    username,
    ws_close_code,
    ws_url,
)
from tests.support import Api, Stack

PASSWORD = "correct horse"


async def register(http: httpx.AsyncClient, name: str) -> dict:
    r = await http.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return r.json()


async def login(http: httpx.AsyncClient, name: str) -> dict:
    r = await http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def status_with(http: httpx.AsyncClient, token: str) -> int:
    return (await http.get("/api/v1/agents", headers=bearer(token))).status_code


async def test_register_and_login_answer_with_a_token_pair(http: httpx.AsyncClient) -> None:
    name = username()
    registered = await register(http, name)
    logged_in = await login(http, name)
    for pair in (registered, logged_in):
        assert pair["user_id"] == registered["user_id"]
        assert pair["refresh_token"].startswith("chr_")
        assert pair["expires_in"] == 30 * 60  # the default access-token lifetime
        assert await status_with(http, pair["token"]) == 200
    # two logins, two different pairs; a refresh token is not an access token
    assert registered["refresh_token"] != logged_in["refresh_token"]
    assert_problem(
        await http.get("/api/v1/agents", headers=bearer(logged_in["refresh_token"])), 401
    )


async def test_refresh_rotates_and_reusing_a_spent_token_revokes_the_login(
    http: httpx.AsyncClient,
) -> None:
    name = username()
    first = await register(http, name)
    other_device = await login(http, name)

    r = await refresh(http, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"] and second["token"] != first["token"]
    assert await status_with(http, second["token"]) == 200

    # the spent token again: someone copied it, so the whole login (family) is revoked
    reused = assert_problem(await refresh(http, first["refresh_token"]), 401)
    assert "already used" in reused["detail"]
    assert_problem(await refresh(http, second["refresh_token"]), 401)
    assert await status_with(http, second["token"]) == 401
    assert await status_with(http, first["token"]) == 401
    # another login of the same user is a different family and keeps working
    assert await status_with(http, other_device["token"]) == 200
    assert (await refresh(http, other_device["refresh_token"])).status_code == 200

    assert_problem(await refresh(http, "chr_not-a-real-token"), 401)
    assert_problem(await http.post("/api/v1/auth/refresh", json={}), 422)


async def test_logout_revokes_the_token_on_http_sse_websocket_and_mcp(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    name = username()
    pair = await register(http, name)
    kept = await login(http, name)
    user = Api(http, pair["token"], pair["user_id"])
    session = await user.new_session()
    events = f"/api/v1/sessions/{session['id']}/events"
    mcp = {**MCP_HEADERS, **bearer(pair["token"])}

    # everything works before the logout
    async with connect(ws_url(stack, pair["token"]), open_timeout=10) as socket_:
        assert (await ping(socket_))["type"] == "pong"
    assert (await http.post("/mcp", json=MCP_INIT, headers=mcp)).status_code == 200

    r = await http.post("/api/v1/auth/logout", headers=bearer(pair["token"]))
    assert r.status_code == 204, r.text

    assert_problem(await http.get("/api/v1/agents", headers=bearer(pair["token"])), 401)
    assert_problem(await http.get(events, headers=bearer(pair["token"])), 401)
    assert await ws_close_code(ws_url(stack, pair["token"])) == 4401
    assert_problem(await http.post("/mcp", json=MCP_INIT, headers=mcp), 401)
    assert_problem(await refresh(http, pair["refresh_token"]), 401)  # the login is gone too
    assert_problem(await http.post("/api/v1/auth/logout", headers=bearer(pair["token"])), 401)
    # the user's other login is untouched
    assert await status_with(http, kept["token"]) == 200


async def test_logout_and_key_deletion_close_streams_that_are_already_open(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    """Open streams re-check their credentials (every second in these tests): after a logout
    the WebSocket closes with 4401 and the SSE stream ends; a deleted API key does the same
    to its socket. The user's other login keeps its socket."""
    name = username()
    pair = await register(http, name)
    kept = await login(http, name)
    user = Api(http, pair["token"], pair["user_id"])
    session = await user.new_session()
    made = await http.post(
        "/api/v1/api-keys", json={"name": "bot", "scopes": ["chat"]}, headers=bearer(kept["token"])
    )
    assert made.status_code == 201, made.text
    key = made.json()

    async with (
        connect(ws_url(stack, pair["token"]), open_timeout=10) as logged_out,
        connect(ws_url(stack, kept["token"]), open_timeout=10) as other_login,
        connect(ws_url(stack, key["key"]), open_timeout=10) as keyed,
        http.stream(
            "GET", f"/api/v1/sessions/{session['id']}/events", headers=bearer(pair["token"])
        ) as sse,
    ):
        for socket_ in (logged_out, other_login, keyed):
            assert (await ping(socket_))["type"] == "pong"
        assert sse.status_code == 200
        r = await http.post("/api/v1/auth/logout", headers=bearer(pair["token"]))
        assert r.status_code == 204, r.text
        r = await http.delete(f"/api/v1/api-keys/{key['id']}", headers=bearer(kept["token"]))
        assert r.status_code == 204, r.text

        for socket_ in (logged_out, keyed):
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(socket_.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        await asyncio.wait_for(_drain(sse), 30)  # the stream ends: the server closed it
        assert (await ping(other_login))["type"] == "pong"


async def _drain(response: httpx.Response) -> None:
    async for _ in response.aiter_raw():
        pass
