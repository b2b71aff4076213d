"""Request ids, security headers, CORS and access-token expiry through a real `chatee api`
(configured with CORS, HSTS, JSON logs and 3-second access tokens)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.security_support import assert_problem, bearer, username
from tests.support import Stack

ORIGIN = "https://app.example"
HARDENED = {
    "CHATEE_SECURITY__CORS_ORIGINS": json.dumps([ORIGIN]),
    "CHATEE_SECURITY__HSTS_SECONDS": "31536000",
    "CHATEE_LOG_JSON": "true",
    "CHATEE_JWT_TTL_SECONDS": "3",
}


@pytest.fixture(scope="module")
def hardened(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    running = Stack(env={**stack_env, **HARDENED}, tmp=tmp_path_factory.mktemp("hardened"))
    running.start_api()
    yield running
    running.stop()


@pytest.fixture
async def http(hardened: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hardened.base, timeout=30) as client:
        yield client


def log_events(stack: Stack) -> list[dict]:
    """The API's JSON log lines (anything else it printed is skipped)."""
    events = []
    for line in stack.logs().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


async def test_the_request_id_is_echoed_and_in_every_error_body(http: httpx.AsyncClient) -> None:
    mine = f"req-{uuid.uuid4().hex}"
    r = await http.get("/api/v1/agents", headers={"X-Request-ID": mine})
    body = assert_problem(r, 401)
    assert r.headers["x-request-id"] == mine and body["request_id"] == mine
    assert r.headers.get_list("x-request-id") == [mine]  # once, not twice

    # none given, or one that is not short and plain: a fresh one is made
    for headers in ({}, {"X-Request-ID": "x" * 65}, {"X-Request-ID": "<script>alert(1)</script>"}):
        r = await http.get("/api/v1/sessions/nope", headers=headers)
        assert r.status_code == 401
        made = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made) and r.json()["request_id"] == made

    r = await http.post(
        "/api/v1/auth/register", json={"username": "x"}, headers={"X-Request-ID": mine}
    )
    assert assert_problem(r, 422)["request_id"] == mine
    ok = await http.get("/healthz", headers={"X-Request-ID": mine})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == mine


async def test_the_websocket_handshake_carries_the_request_id(hardened: Stack) -> None:
    url = hardened.base.replace("http://", "ws://") + "/ws?token=nope"
    mine = f"ws-{uuid.uuid4().hex}"
    async with connect(url, additional_headers={"X-Request-ID": mine}) as socket_:
        assert socket_.response is not None
        assert socket_.response.headers.get_all("X-Request-ID") == [mine]
    async with connect(url, additional_headers={"X-Request-ID": "<bad>"}) as socket_:
        assert socket_.response is not None
        assert re.fullmatch(r"[0-9a-f]{32}", socket_.response.headers["X-Request-ID"])


async def test_log_lines_of_a_request_carry_its_id(
    http: httpx.AsyncClient, hardened: Stack
) -> None:
    r = await http.post(
        "/api/v1/auth/register", json={"username": username(), "password": "correct horse"}
    )
    spent = r.json()["refresh_token"]
    assert (
        await http.post("/api/v1/auth/refresh", json={"refresh_token": spent})
    ).status_code == 200

    mine = f"reuse-{uuid.uuid4().hex}"
    r = await http.post(
        "/api/v1/auth/refresh", json={"refresh_token": spent}, headers={"X-Request-ID": mine}
    )
    assert assert_problem(r, 401)["request_id"] == mine
    # the route's own warning and the request line both name the request (the request line is
    # written just after the response went out: give the process a moment to flush it)
    for _ in range(100):
        events = log_events(hardened)
        if any(e.get("event") == "http request" and e.get("request_id") == mine for e in events):
            break
        await asyncio.sleep(0.1)
    warned = [e for e in events if "refresh token was reused" in str(e.get("event"))]
    assert warned and all(e.get("request_id") == mine for e in warned[-1:]), warned
    request = [
        e for e in events if e.get("event") == "http request" and e.get("request_id") == mine
    ]
    assert [(e["path"], e["status"]) for e in request] == [("/api/v1/auth/refresh", 401)]
    # and nothing of the token itself reached the log
    assert spent not in hardened.logs()


async def test_security_headers_on_every_response(http: httpx.AsyncClient) -> None:
    responses = {
        "json": await http.get("/healthz"),
        "problem": await http.get("/api/v1/agents"),
        "missing": await http.get("/no/such/path"),
        "docs": await http.get("/docs"),
    }
    for name, r in responses.items():
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["x-frame-options"] == "DENY", name
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert r.headers["strict-transport-security"].startswith("max-age=31536000"), name
    assert responses["json"].headers["content-security-policy"].startswith("default-src 'none'")
    assert "content-security-policy" not in responses["docs"].headers  # Swagger UI loads a CDN
    r = await http.post(
        "/api/v1/auth/register", json={"username": username(), "password": "correct horse"}
    )
    assert r.headers["cache-control"] == "no-store"  # tokens are never cached


async def test_hsts_only_when_configured(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base) as plain:
        r = await plain.get("/healthz")
    assert "strict-transport-security" not in r.headers
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_cors_preflight_only_for_configured_origins(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = await http.options("/api/v1/agents", headers={"Origin": ORIGIN, **ask})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()

    r = await http.options("/api/v1/agents", headers={"Origin": "https://evil.example", **ask})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await http.get("/api/v1/agents", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    r = await http.get("/api/v1/agents", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers

    # by default no origin is allowed at all
    async with httpx.AsyncClient(base_url=stack.base) as plain:
        r = await plain.options("/api/v1/agents", headers={"Origin": ORIGIN, **ask})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


async def test_an_expired_access_token_is_401_and_refresh_gets_a_fresh_one(
    http: httpx.AsyncClient,
) -> None:
    r = await http.post(
        "/api/v1/auth/register", json={"username": username(), "password": "correct horse"}
    )
    pair = r.json()
    assert pair["expires_in"] == 3
    await asyncio.sleep(4)
    assert_problem(await http.get("/api/v1/agents", headers=bearer(pair["token"])), 401)
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert (await http.get("/api/v1/agents", headers=bearer(fresh))).status_code == 200
