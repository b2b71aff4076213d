"""Hostile input, over HTTP and WebSocket, on SQLite and on MariaDB (utf8mb4).

Every text field gets SQL-injection strings, path traversal (plain and encoded), NUL bytes,
RTL/zero-width characters, 4-byte emoji, lone surrogates and oversized values. Each value is
either stored and read back exactly, or refused with a 4xx `application/problem+json` and
nothing written. Malformed WebSocket frames get `error` frames and the socket keeps working;
a bogus `Last-Event-ID` is a 400, not a 500.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.messaging_support import WsClient
from tests.support import Api, Stack

HOSTILE = [
    "'; DROP TABLE users; --",
    '" OR "1"="1',
    "1' UNION SELECT password_hash FROM users --",
    "../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..\\..\\windows\\win.ini",
    "nul\x00byte",
    "\u202egnp.exe\u202c and zero\u200bwidth\u200d\ufeff",
    "emoji 😀 family 👩‍👩‍👧‍👦 math 𝕏 han 𠜎",
    "<script>alert(1)</script>${jndi:ldap://x}%s%n{0}",
]
LONE_SURROGATE = '"bad \\ud800 half"'  # JSON text: a lone high surrogate, not valid Unicode
HUGE = "x" * 2_000_000


def _raw(template: dict[str, Any], field: str) -> bytes:
    """`template` as JSON with `field` set to a lone surrogate (Python's json cannot emit it)."""
    body = json.dumps({**template, field: "@@"}, ensure_ascii=False)
    return body.replace('"@@"', LONE_SURROGATE).encode()


def assert_refused(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/problem+json"), what
    assert "Traceback" not in r.text


# -- a stack per database -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def target(
    request: pytest.FixtureRequest,
    stack: Stack,
    mariadb_url: str | None,
    isolated_stacks: Callable[[dict[str, str]], Stack],
) -> Iterator[Stack]:
    if request.param == "sqlite":
        yield stack
        return
    if mariadb_url is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    maria = isolated_stacks({"CHATEE_DATABASE_URL": mariadb_url})
    maria.start_worker()
    maria.start_api()
    yield maria


@pytest.fixture(scope="module")
async def client(target: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=target.base, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
async def me(client: httpx.AsyncClient) -> Api:
    return await Api.register(client)


@pytest.fixture(scope="module")
async def friend(client: httpx.AsyncClient) -> Api:
    return await Api.register(client)


async def _count(api: Api, path: str, key: str | None = None) -> int:
    r = await api.request("GET", path)
    assert r.status_code == 200, r.text
    body = r.json()
    return len(body[key] if key else body)


# -- HTTP text fields ---------------------------------------------------------------------------


async def test_usernames_and_passwords(client: httpx.AsyncClient) -> None:
    """Usernames are a strict pattern: hostile ones are 422. Passwords may be anything
    printable: a hostile one registers, and logs in with exactly itself."""
    for value in [*HOSTILE, HUGE]:
        r = await client.post(
            "/api/v1/auth/register", json={"username": value, "password": "p" * 9}
        )
        assert_refused(r, f"username {value!r}")
        r = await client.post("/api/v1/auth/login", json={"username": value, "password": "p" * 9})
        assert_refused(r, f"login {value!r}")
    for value in (HOSTILE[0], HOSTILE[7], HOSTILE[9]):  # SQL, NUL, emoji (argon2 is slow)
        name = f"pw-{uuid.uuid4().hex[:10]}"
        password = (value + "-padding")[:256]
        r = await client.post(
            "/api/v1/auth/register", json={"username": name, "password": password}
        )
        assert r.status_code == 201, (value, r.text)
        ok = await client.post("/api/v1/auth/login", json={"username": name, "password": password})
        assert ok.status_code == 200, value
        wrong = await client.post(
            "/api/v1/auth/login", json={"username": name, "password": password + "x"}
        )
        assert wrong.status_code == 401
    r = await client.post(
        "/api/v1/auth/register", json={"username": "x" * 10, "password": HUGE[:300]}
    )
    assert_refused(r, "a 300-character password")
    for field in ("username", "password"):
        body = _raw({"username": f"s-{uuid.uuid4().hex[:8]}", "password": "long enough"}, field)
        r = await client.post(
            "/api/v1/auth/register", content=body, headers={"content-type": "application/json"}
        )
        assert_refused(r, f"lone surrogate in {field}")


async def test_agent_and_session_text_round_trips(me: Api) -> None:
    for value in HOSTILE:
        agent = await me.create_agent(name=value[:64], system_prompt=value)
        r = await me.request("GET", f"/agents/{agent['id']}")
        assert (r.json()["name"], r.json()["system_prompt"]) == (value[:64], value)
        r = await me.request("POST", "/sessions", json={"agent_id": agent["id"], "title": value})
        assert r.status_code == 201, r.text
        got = await me.request("GET", f"/sessions/{r.json()['id']}")
        assert got.json()["title"] == value
    agents_before = await _count(me, "/agents")
    sessions_before = await _count(me, "/sessions?limit=200")
    for body in (
        {"name": HUGE, "model": "m"},
        {"name": "ok", "system_prompt": HUGE[:40_000], "model": "m"},
        {"name": "ok", "model": HUGE[:200]},
    ):
        assert_refused(await me.request("POST", "/agents", json=body), f"agent {list(body)}")
    for field in ("name", "system_prompt", "model"):
        r = await me.request(
            "POST",
            "/agents",
            content=_raw({"name": "a", "model": "m"}, field),
            headers={"content-type": "application/json"},
        )
        assert_refused(r, f"lone surrogate in agent {field}")
    r = await me.request("POST", "/sessions", json={"agent_id": agent["id"], "title": HUGE[:300]})
    assert_refused(r, "a long session title")
    for agent_id in ("../../etc/passwd", "1 OR 1=1", "%2e%2e", "\x00", "١٢٣"):
        r = await me.request("POST", "/sessions", json={"agent_id": agent_id})
        assert_refused(r, f"agent_id {agent_id!r}")
    assert await _count(me, "/agents") == agents_before
    assert await _count(me, "/sessions?limit=200") == sessions_before


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "1%00", "1'%20OR%20'1'='1", "%F0%9F%98%80"],
)
async def test_hostile_path_ids_are_404(me: Api, path: str) -> None:
    for prefix in ("/agents/", "/sessions/", "/mcp/servers/", "/conversations/"):
        r = await me.request("GET", prefix + path)
        assert r.status_code in (404, 405), (prefix, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_chat_messages_round_trip_or_leave_nothing(me: Api) -> None:
    session = await me.new_session(name="hostile-chat")
    sent: list[tuple[str, str]] = []
    for i, value in enumerate(HOSTILE):
        client_msg_id = (value + f"#{i}")[:128]
        r = await me.request(
            "POST",
            "/chat/send",
            json={"session_id": session["id"], "content": value, "client_msg_id": client_msg_id},
        )
        assert r.status_code == 202, (value, r.text)
        sent.append((r.json()["message_id"], value))
        again = await me.request(  # idempotent on the hostile client_msg_id too
            "POST",
            "/chat/send",
            json={"session_id": session["id"], "content": value, "client_msg_id": client_msg_id},
        )
        assert again.json()["message_id"] == r.json()["message_id"]
    stored = {m["id"]: m["content"] for m in await me.messages(session["id"])}
    for message_id, value in sent:
        assert stored[message_id] == value
    before = await _user_messages(me, session["id"])
    refused = [
        {"session_id": session["id"], "content": HUGE[:40_000]},
        {"session_id": session["id"], "content": "x", "client_msg_id": HUGE[:129]},
        {"session_id": "../../etc/passwd", "content": "x"},
        {"session_id": session["id"], "content": ""},
    ]
    for body in refused:
        for route in ("/chat/send", "/chat/stream"):
            assert_refused(await me.request("POST", route, json=body), f"{route} {list(body)}")
    for field in ("content", "client_msg_id"):
        template = {"session_id": session["id"], "content": "x", "client_msg_id": "c"}
        r = await me.request(
            "POST",
            "/chat/send",
            content=_raw(template, field),
            headers={"content-type": "application/json"},
        )
        assert_refused(r, f"lone surrogate in chat {field}")
    not_utf8 = b'{"session_id": "' + session["id"].encode() + b'", "content": "\xff\xfe"}'
    r = await me.request(
        "POST", "/chat/send", content=not_utf8, headers={"content-type": "application/json"}
    )
    assert_refused(r, "invalid UTF-8")
    assert await _user_messages(me, session["id"]) == before, "a refused send left a message"


async def _user_messages(api: Api, session_id: str) -> list[str]:
    """The ids of the session's user messages (agent replies keep arriving meanwhile)."""
    return [m["id"] for m in await api.messages(session_id) if m["role"] == "user"]


async def test_conversation_text_round_trips(me: Api, friend: Api) -> None:
    for value in HOSTILE:
        r = await me.request(
            "POST",
            "/conversations",
            json={"type": "group", "members": [friend.user_id], "title": value},
        )
        assert r.status_code == 201, (value, r.text)
        group = r.json()
        assert group["title"] == value
        r = await me.request("POST", f"/conversations/{group['id']}/threads", json={"title": value})
        assert r.status_code == 201 and r.json()["title"] == value
        r = await me.request(
            "POST",
            f"/conversations/{group['id']}/messages",
            json={"content": value, "client_msg_id": value[:128]},
        )
        assert r.status_code == 201, (value, r.text)
        page = await friend.request("GET", f"/conversations/{group['id']}/messages")
        assert [m["content"] for m in page.json()["items"]] == [value]
    path = f"/conversations/{group['id']}/messages"
    before = await _count(me, path, "items")
    for body in (
        {"content": HUGE[:400_000], "client_msg_id": "big"},
        {"content": "x", "client_msg_id": HUGE[:129]},
        {"content": ""},
    ):
        assert_refused(await me.request("POST", path, json=body), f"message {list(body)}")
    for field in ("content", "client_msg_id"):
        r = await me.request(
            "POST",
            path,
            content=_raw({"content": "x", "client_msg_id": "c"}, field),
            headers={"content-type": "application/json"},
        )
        assert_refused(r, f"lone surrogate in message {field}")
    r = await me.request(
        "POST", "/conversations", json={"type": "group", "members": [], "title": HUGE[:300]}
    )
    assert_refused(r, "a long conversation title")
    assert await _count(me, path, "items") == before, "a refused message was stored"


async def test_mcp_server_fields(me: Api) -> None:
    base = {"transport": "streamable_http", "url": "http://127.0.0.1:9/mcp"}
    for value in HOSTILE:
        r = await me.request("POST", "/mcp/servers", json={**base, "name": value[:64].strip()})
        if value[:64].strip() and "\x00" not in value:
            assert r.status_code == 201, (value, r.text)
            got = await me.request("GET", f"/mcp/servers/{r.json()['id']}")
            assert got.json()["name"] == value[:64].strip()
        else:
            assert r.status_code in (201, 422), (value, r.text)
        r = await me.request("POST", "/mcp/servers", json={**base, "name": "u", "url": value})
        assert_refused(r, f"MCP url {value!r}")
    before = await _count(me, "/mcp/servers")
    for body in (
        {**base, "name": HUGE[:100]},
        {**base, "name": "x", "url": "http://127.0.0.1:9/" + HUGE[:3000]},
        {**base, "name": "x", "headers": {"X-Key": "a\r\nInjected: yes"}},
        {**base, "name": "x", "headers": {"Bad Header\x00": "v"}},
        {"transport": "stdio", "name": "x", "command": "../../bin/sh"},
    ):
        assert_refused(await me.request("POST", "/mcp/servers", json=body), f"MCP {body}")
    r = await me.request(
        "POST",
        "/mcp/servers",
        content=_raw({**base, "name": "n"}, "name"),
        headers={"content-type": "application/json"},
    )
    assert_refused(r, "lone surrogate in an MCP server name")
    assert await _count(me, "/mcp/servers") == before


# -- SSE cursors --------------------------------------------------------------------------------


BOGUS_CURSORS: list[str | bytes] = [
    "garbage",
    "-1",
    "-1-0",
    "1-",
    "99999999999999999999999-0",
    "0-99999999999999999999999",
    "18446744073709551616",
    "1' OR '1'='1",
    "../../etc/passwd",
    "\u00fc\u00df",
    "١٢٣-٠",  # Arabic-Indic digits: "digits" to str.isdigit, not to Redis
    "ü".encode(),
    b"\xff\xfe",
]


async def test_a_bogus_last_event_id_is_400(me: Api) -> None:
    session = await me.new_session(name="cursor")
    path = f"/api/v1/sessions/{session['id']}/events"
    for cursor in BOGUS_CURSORS:
        raw = cursor if isinstance(cursor, bytes) else cursor.encode()  # non-ASCII on the wire
        r = await me.client.get(path, headers={**me.headers, "Last-Event-ID": raw})  # type: ignore[dict-item]
        assert r.status_code == 400, (cursor, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if isinstance(cursor, str):
            r = await me.client.get(path, headers=me.headers, params={"after": cursor})
            assert r.status_code == 400, (cursor, r.status_code, r.text)


# -- WebSocket ----------------------------------------------------------------------------------


async def test_malformed_websocket_frames_get_errors_and_the_socket_keeps_working(
    target: Stack, me: Api, friend: Api
) -> None:
    r = await me.request(
        "POST", "/conversations", json={"type": "group", "members": [friend.user_id]}
    )
    group = r.json()["id"]
    path = f"/conversations/{group}/messages"
    sock = await WsClient(target.base, me.token).connect()
    assert sock.ws is not None
    try:
        raw_frames: list[str | bytes] = [
            "not json",
            "[1, 2, 3]",
            '"just a string"',
            "null",
            "{}",
            '{"type": 7}',
            b"\xff\xfe\xfd",  # binary, not UTF-8
            json.dumps({"type": "ping"}).encode(),  # binary but valid: answered
            '{"type": "message.send", "conversation_id": "'
            + group
            + '", "content": '
            + LONE_SURROGATE
            + "}",
        ]
        for raw in raw_frames:
            await sock.ws.send(raw)
        await sock.wait_for(lambda f: f["type"] == "pong", within=15)
        bad = [
            {"type": "dance"},
            {"type": "message.send"},
            {"type": "message.send", "conversation_id": group},
            {"type": "message.send", "conversation_id": int(group), "content": "x"},
            {"type": "message.send", "conversation_id": group, "content": 5},
            {"type": "message.send", "conversation_id": group, "content": ["x"]},
            {"type": "message.send", "conversation_id": "../../etc/passwd", "content": "x"},
            {
                "type": "message.send",
                "conversation_id": group,
                "content": "x",
                "client_msg_id": HUGE[:200],
            },
            {"type": "message.send", "conversation_id": group, "content": HUGE[:500_000]},
            {"type": "read", "conversation_id": group, "seq": "1"},
            {"type": "read", "conversation_id": group, "seq": -1},
            {"type": "read", "conversation_id": group, "seq": True},
            {"type": "sync", "after": -5},
            {"type": "sync", "after": 1.5},
            {"type": "typing"},
            {"type": "chat.send", "session_id": "1 OR 1=1", "content": "x"},
            {"type": "\x00" + "x" * 10_000},
        ]
        for frame in bad:
            reply = await sock.request(frame, within=20)
            assert reply["type"] == "error", (
                frame if len(str(frame)) < 300 else frame["type"],
                reply,
            )
            assert reply.get("code") != "internal", reply
        errors = [f for f in sock.frames if f["type"] == "error"]
        assert all(f.get("code") != "internal" for f in errors), errors
        assert len(errors) >= 8 + len(bad)  # every raw frame but the valid ping got one
        # still working: a real send is acked, hostile content round-trips
        for value in HOSTILE:
            ack = await sock.request(
                {"type": "message.send", "conversation_id": group, "content": value}
            )
            assert ack["type"] == "message.ack", ack
        page = await me.request("GET", path, params={"limit": 50})
        assert [m["content"] for m in reversed(page.json()["items"])] == HOSTILE
    finally:
        await sock.close()
