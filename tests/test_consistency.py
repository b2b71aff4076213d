"""The same rules on every route, through a real `chatee api`: one timestamp format, login
errors that do not tell a short password from a wrong one, clear answers to bodies that are not
JSON, `errors` on every 422, and tool calls that stay visible in a session's history."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import connect

from chatee.client import Client, TurnCompleted
from chatee.devtools.llm_server import LLMServerThread
from tests.security_support import assert_problem, ping, ws_url
from tests.support import Api, Stack, access_token, new_session, stored_messages, turn_events

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def timestamps(value: Any, found: list[str] | None = None) -> list[str]:
    """Every value of a key ending in `_at` (or `last_seen`) anywhere in a JSON document."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            if (key.endswith("_at") or key == "last_seen") and item is not None:
                found.append(item)
            else:
                timestamps(item, found)
    elif isinstance(value, list):
        for item in value:
            timestamps(item, found)
    return found


async def test_one_timestamp_format_on_every_rest_route(
    stack: Stack, chatee: Client, other_chatee: Client
) -> None:
    session = await new_session(chatee)
    events = await turn_events(chatee, session.id, "hi")
    assert isinstance(events[-1], TurnCompleted)
    await chatee.create_api_key("k", ["chat"])
    assert other_chatee.user_id is not None
    await chatee.create_conversation("group", [other_chatee.user_id])
    async with connect(ws_url(stack, access_token(other_chatee)), open_timeout=10) as socket_:
        await ping(socket_)  # other_chatee is online: presence has a last_seen

    reads = [
        "/me",
        "/agents",
        "/sessions",
        f"/sessions/{session.id}",
        f"/sessions/{session.id}/messages",
        "/api-keys",
        "/conversations",
        f"/presence?user_ids={other_chatee.user_id}",
    ]
    # the answers as JSON, as they came over the wire (not parsed into the SDK's models)
    seen = {path: timestamps(await chatee.request("GET", path)) for path in reads}
    assert all(seen.values()), seen  # every route above carries at least one timestamp
    wrong = {p: [t for t in ts if not RFC3339_MS.match(t)] for p, ts in seen.items()}
    assert not any(wrong.values()), wrong


async def test_a_wrong_password_at_login_is_401_like_a_wrong_username(
    http: httpx.AsyncClient, chatee: Client
) -> None:
    name = (await chatee.me()).username
    answers = []
    for body in (
        {"username": name, "password": "x"},  # too short to be anyone's: still just wrong
        {"username": name, "password": "a wrong but long password"},
        {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "x"},
        {"username": "no", "password": ""},
        {"username": "x" * 100, "password": "p" * 300},  # longer than any account allows
    ):
        answers.append(assert_problem(await http.post("/api/v1/auth/login", json=body), 401))
    assert len({a["detail"] for a in answers}) == 1


async def test_a_body_that_is_not_declared_json_is_415(http: httpx.AsyncClient) -> None:
    raw = b'{"username": "someone", "password": "correct horse"}'
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www"}):
        r = await http.post("/api/v1/auth/login", content=raw, headers=headers)
        body = assert_problem(r, 415)
        assert "Content-Type: application/json" in body["detail"]


async def test_malformed_json_names_the_position_in_words(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/api/v1/auth/login",
        content=b'{"username": "a",\n "password" "b"}',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(r, 422)
    assert body["detail"].startswith("invalid JSON at line 2, column 13"), body["detail"]
    assert body["errors"][0]["type"] == "json_invalid"


async def test_every_422_carries_errors(user: Api, other_chatee: Client) -> None:
    theirs = (
        await other_chatee.create_mcp_server(
            "theirs", "streamable_http", url="http://127.0.0.1:9/mcp"
        )
    ).id

    # a domain rule (the core's Invalid), not the request's shape
    r = await user.request("POST", "/agents", json={"name": "a", "mcp_servers": [theirs]})
    body = assert_problem(r, 422)
    assert body["errors"] == [
        {
            "loc": ["mcp_servers"],
            "msg": f"no MCP server of yours with id {theirs!r}",
            "type": "validation",
        }
    ]
    # the request's shape
    body = assert_problem(await user.request("POST", "/agents", json={"name": ""}), 422)
    assert body["errors"][0]["loc"] == ["body", "name"]
    # a query parameter checked by the core
    body = assert_problem(await user.request("GET", "/presence?user_ids=x"), 422)
    assert body["errors"][0]["loc"] == ["user_ids"]


async def test_tool_calls_are_visible_in_session_history(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"tool_calls": [{"id": "call_w", "name": "weather", "arguments": {"city": "Oslo"}}]},
            "I cannot look that up.",
        ],
    )
    events = await turn_events(chatee, session.id, f"weather in Oslo? {marker}")
    assert isinstance(events[-1], TurnCompleted)

    history = list(reversed(await stored_messages(chatee, session.id)))  # oldest first
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    asked, answered = history[1], history[2]
    assert asked.tool_calls is not None
    assert [c.model_dump() for c in asked.tool_calls] == [
        {"id": "call_w", "name": "weather", "arguments": '{"city": "Oslo"}'}
    ]
    assert answered.tool_call_id == "call_w" and answered.name == "weather"
    assert "no tool named weather" in answered.content
    assert history[3].content == "I cannot look that up." and history[3].tool_calls is None
