"""The authorization matrix: every route of the app and every WebSocket frame type, tried by a
user who neither owns the resource nor is a member of it.

The matrix is checked against the live route table, so a route added later that is not in it
fails `test_every_route_is_in_the_matrix` with "route X is not in the matrix". For each entry
the intruder's request on the owner's real ids must get exactly the answer a request on ids that
do not exist gets (404 for a path id: no existence leak), and the owner's view of everything —
read back through the API — must be unchanged afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from api.app import create_app
from chatee.config import Settings
from tests.messaging_support import WsClient
from tests.support import Api, Stack

# Routes anyone may call (no user's resource behind them). Add new public routes here.
PUBLIC = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /docs/oauth2-redirect",
    "GET /redoc",
    "POST /api/v1/auth/register",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/refresh",  # trades a refresh token: who holds it is who it names
    "ANY /static-offline-docs",  # the /docs and /redoc assets
    "GET /",  # the web app: static files; it signs in through the API
    "GET /app/{name:path}",
    "GET /app/config.json",
}

# Routes that only ever act on the caller's own things, whatever they are given; they are in
# the matrix below too (their answer must not change when given another user's ids).
BY_DESIGN = {
    # presence of any user id is public by the contract (online/offline + last seen only);
    # an unknown id answers exactly like a user who never connected
    "GET /api/v1/presence": "presence is visible to every signed-in user (DESIGN.md)",
    # the WebSocket's frames have their own matrix (WS_FRAMES below)
    "WS /ws": "covered frame by frame in test_every_websocket_frame_is_denied",
    # the user directory and public profiles are for every signed-in user (DESIGN.md)
    "GET /api/v1/users": "the user directory is visible to every signed-in user (DESIGN.md)",
    "GET /api/v1/users/{user_id}": "a public profile is visible to every signed-in user",
}

MISSING = {  # ids that name nothing, standing in for each of the owner's ids
    "agent": "4242424242424242",
    "session": "4242424242424243",
    "server": "4242424242424244",
    "group": "4242424242424245",
    "thread": "4242424242424246",
    "member": "4242424242424247",
    "kb": "4242424242424248",
    "doc": "4242424242424249",
    "agent_memory": "4242424242424250",
    "user_memory": "4242424242424251",
    "api_key": "4242424242424252",
    "refresh": "rt_4242424242424242424242424242",
    "message": "4242424242424253",
}
# per-request or freshly generated fields: they differ between any two calls
VOLATILE = {"request_id", "instance", "created_at", "updated_at", "key", "prefix"}


@dataclass
class World:
    owner: Api
    member: Api
    intruder: Api
    ids: dict[str, str]  # the owner's resources, by the keys of MISSING
    baseline: dict[str, Any] = field(default_factory=dict)  # the owner's view, before any case


Call = Callable[[Api, dict[str, str]], Awaitable[httpx.Response]]


def _req(method: str, path: str, **kwargs: Any) -> Call:
    """A request whose path and JSON body name resources as `{agent}`, `{session}`, ..."""

    def fill(value: Any, ids: dict[str, str]) -> Any:
        if isinstance(value, str):
            return value.format(**ids)
        if isinstance(value, dict):
            return {k: fill(v, ids) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, ids) for v in value]
        return value

    fresh_login = kwargs.pop("fresh_login", False)

    async def call(api: Api, ids: dict[str, str]) -> httpx.Response:
        if fresh_login:  # a throwaway login, so the caller's own token stays valid
            r = await api.client.post(
                "/api/v1/auth/login", json={"username": api.username, "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            api = Api(api.client, r.json()["token"], api.user_id)
        return await api.request(method, fill(path, ids), **fill(kwargs, ids))

    return call


CHAT = {"session_id": "{session}", "content": "sneaky", "client_msg_id": "intruder-1"}
SERVER = {"name": "mine", "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp"}
AGENT = {"name": "copycat", "model": "scripted"}
UPLOAD = {"file": ("notes.txt", b"intruder's notes", "text/plain")}
PASSWORD = "correct horse"

# "METHOD /path" -> (the intruder's request, expected status). The expected status is the one a
# request for ids that do not exist gets too; the test checks both and that the bodies match.
MATRIX: dict[str, tuple[Call, int]] = {
    # naming someone else's MCP server: the same 422 as an id that names nothing
    "POST /api/v1/agents": (
        _req("POST", "/agents", json={**AGENT, "mcp_servers": ["{server}"]}),
        422,
    ),
    "GET /api/v1/agents": (_req("GET", "/agents"), 200),
    "GET /api/v1/agents/{agent_id}": (_req("GET", "/agents/{agent}"), 404),
    "PUT /api/v1/agents/{agent_id}": (_req("PUT", "/agents/{agent}", json=AGENT), 404),
    "PUT /api/v1/agents/{agent_id}#foreign-server": (
        _req("PUT", "/agents/{own_agent}", json={**AGENT, "mcp_servers": ["{server}"]}),
        422,
    ),
    "DELETE /api/v1/agents/{agent_id}": (_req("DELETE", "/agents/{agent}"), 404),
    "POST /api/v1/sessions": (_req("POST", "/sessions", json={"agent_id": "{agent}"}), 404),
    "GET /api/v1/sessions": (_req("GET", "/sessions"), 200),
    "GET /api/v1/sessions/{session_id}": (_req("GET", "/sessions/{session}"), 404),
    "POST /api/v1/sessions/{session_id}/close": (_req("POST", "/sessions/{session}/close"), 404),
    "POST /api/v1/sessions/{session_id}/cancel": (_req("POST", "/sessions/{session}/cancel"), 404),
    "POST /api/v1/sessions/{session_id}/human-reply": (
        _req("POST", "/sessions/{session}/human-reply", json={"request_id": "1-1", "content": "x"}),
        404,
    ),
    "GET /api/v1/sessions/{session_id}/messages": (
        _req("GET", "/sessions/{session}/messages"),
        404,
    ),
    "GET /api/v1/sessions/{session_id}/events": (
        _req("GET", "/sessions/{session}/events", params={"after": "0"}),
        404,
    ),
    "POST /api/v1/chat/send": (_req("POST", "/chat/send", json=CHAT), 404),
    "POST /api/v1/chat/stream": (_req("POST", "/chat/stream", json=CHAT), 404),
    "POST /api/v1/mcp/servers": (_req("POST", "/mcp/servers", json=SERVER), 201),
    "GET /api/v1/mcp/servers": (_req("GET", "/mcp/servers"), 200),
    "GET /api/v1/mcp/servers/{server_id}": (_req("GET", "/mcp/servers/{server}"), 404),
    "PUT /api/v1/mcp/servers/{server_id}": (
        _req("PUT", "/mcp/servers/{server}", json=SERVER),
        404,
    ),
    "DELETE /api/v1/mcp/servers/{server_id}": (_req("DELETE", "/mcp/servers/{server}"), 404),
    "POST /api/v1/mcp/servers/{server_id}/connect": (
        _req("POST", "/mcp/servers/{server}/connect"),
        404,
    ),
    "GET /api/v1/mcp/servers/{server_id}/tools": (
        _req("GET", "/mcp/servers/{server}/tools"),
        404,
    ),
    "POST /api/v1/mcp/servers/{server_id}/tools/{tool}/call": (
        _req("POST", "/mcp/servers/{server}/tools/echo/call", json={"arguments": {}}),
        404,
    ),
    # naming someone else's agent as a member: the same 422 as an id that names nothing
    "POST /api/v1/conversations": (
        _req("POST", "/conversations", json={"type": "group", "members": ["{agent}"]}),
        422,
    ),
    "GET /api/v1/conversations": (_req("GET", "/conversations"), 200),
    "GET /api/v1/conversations/{conversation_id}": (_req("GET", "/conversations/{group}"), 404),
    "GET /api/v1/conversations/{conversation_id}/members": (
        _req("GET", "/conversations/{group}/members"),
        404,
    ),
    "POST /api/v1/conversations/{conversation_id}/members": (
        _req("POST", "/conversations/{group}/members", json={"members": ["{member}"]}),
        404,
    ),
    "PATCH /api/v1/conversations/{conversation_id}/members/{member_id}": (
        _req("PATCH", "/conversations/{group}/members/{member}", json={"role": "owner"}),
        404,
    ),
    "DELETE /api/v1/conversations/{conversation_id}/members/{member_id}": (
        _req("DELETE", "/conversations/{group}/members/{member}"),
        404,
    ),
    "POST /api/v1/conversations/{conversation_id}/threads": (
        _req("POST", "/conversations/{group}/threads", json={"title": "mine now"}),
        404,
    ),
    "GET /api/v1/conversations/{conversation_id}/threads": (
        _req("GET", "/conversations/{group}/threads"),
        404,
    ),
    "POST /api/v1/conversations/{conversation_id}/messages": (
        _req(
            "POST", "/conversations/{thread}/messages", json={"content": "hi", "client_msg_id": "m"}
        ),  # noqa: E501
        404,
    ),
    "GET /api/v1/conversations/{conversation_id}/messages": (
        _req("GET", "/conversations/{thread}/messages"),
        404,
    ),
    "POST /api/v1/conversations/{conversation_id}/read": (
        _req("POST", "/conversations/{group}/read", json={"seq": 1}),
        404,
    ),
    "PATCH /api/v1/conversations/{conversation_id}/messages/{message_id}": (
        _req("PATCH", "/conversations/{group}/messages/{message}", json={"content": "mine"}),
        404,
    ),
    "DELETE /api/v1/conversations/{conversation_id}/messages/{message_id}": (
        _req("DELETE", "/conversations/{group}/messages/{message}"),
        404,
    ),
    "PUT /api/v1/conversations/{conversation_id}/messages/{message_id}/reactions/{emoji}": (
        _req("PUT", "/conversations/{group}/messages/{message}/reactions/%F0%9F%91%8D"),
        404,
    ),
    "DELETE /api/v1/conversations/{conversation_id}/messages/{message_id}/reactions/{emoji}": (
        _req("DELETE", "/conversations/{group}/messages/{message}/reactions/%F0%9F%91%8D"),
        404,
    ),
    # knowledge bases and their documents
    "POST /api/v1/knowledge-bases": (_req("POST", "/knowledge-bases", json={"name": "kb"}), 201),
    "GET /api/v1/knowledge-bases": (_req("GET", "/knowledge-bases"), 200),
    "GET /api/v1/knowledge-bases/{kb_id}": (_req("GET", "/knowledge-bases/{kb}"), 404),
    "DELETE /api/v1/knowledge-bases/{kb_id}": (_req("DELETE", "/knowledge-bases/{kb}"), 404),
    "POST /api/v1/knowledge-bases/{kb_id}/search": (
        _req("POST", "/knowledge-bases/{kb}/search", json={"query": "secret plans"}),
        404,
    ),
    "GET /api/v1/knowledge-bases/{kb_id}/documents": (
        _req("GET", "/knowledge-bases/{kb}/documents"),
        404,
    ),
    "POST /api/v1/knowledge-bases/{kb_id}/documents": (
        _req("POST", "/knowledge-bases/{kb}/documents", files=UPLOAD),
        404,
    ),
    "GET /api/v1/knowledge-bases/{kb_id}/documents/{doc_id}": (
        _req("GET", "/knowledge-bases/{kb}/documents/{doc}"),
        404,
    ),
    "PUT /api/v1/knowledge-bases/{kb_id}/documents/{doc_id}": (
        _req("PUT", "/knowledge-bases/{kb}/documents/{doc}", files=UPLOAD),
        404,
    ),
    "POST /api/v1/knowledge-bases/{kb_id}/documents/{doc_id}/retry": (
        _req("POST", "/knowledge-bases/{kb}/documents/{doc}/retry"),
        404,
    ),
    "DELETE /api/v1/knowledge-bases/{kb_id}/documents/{doc_id}": (
        _req("DELETE", "/knowledge-bases/{kb}/documents/{doc}"),
        404,
    ),
    "GET /api/v1/agents/{agent_id}/knowledge-bases": (
        _req("GET", "/agents/{agent}/knowledge-bases"),
        404,
    ),
    "PUT /api/v1/agents/{agent_id}/knowledge-bases": (
        _req("PUT", "/agents/{agent}/knowledge-bases", json={"knowledge_base_ids": []}),
        404,
    ),
    # the intruder's own agent, given the owner's knowledge base
    "PUT /api/v1/agents/{agent_id}/knowledge-bases#foreign-kb": (
        _req("PUT", "/agents/{own_agent}/knowledge-bases", json={"knowledge_base_ids": ["{kb}"]}),
        404,
    ),
    # memory
    "GET /api/v1/agents/{agent_id}/memory": (_req("GET", "/agents/{agent}/memory"), 404),
    "POST /api/v1/agents/{agent_id}/memory": (
        _req("POST", "/agents/{agent}/memory", json={"key": "k", "value": "v", "scope": "agent"}),
        404,
    ),
    "DELETE /api/v1/agents/{agent_id}/memory/{entry_id}": (
        _req("DELETE", "/agents/{agent}/memory/{agent_memory}"),
        404,
    ),
    "DELETE /api/v1/agents/{agent_id}/memory/{entry_id}#own-agent": (
        _req("DELETE", "/agents/{own_agent}/memory/{agent_memory}"),
        404,
    ),
    "GET /api/v1/memory": (_req("GET", "/memory"), 200),
    "POST /api/v1/memory": (
        _req("POST", "/memory", json={"agent_id": "{agent}", "key": "k", "value": "v"}),
        404,
    ),
    "DELETE /api/v1/memory/{entry_id}": (_req("DELETE", "/memory/{user_memory}"), 404),
    # API keys and logout
    "POST /api/v1/api-keys": (
        _req("POST", "/api-keys", json={"name": "k", "scopes": ["agents:read"]}),
        201,
    ),
    "GET /api/v1/api-keys": (_req("GET", "/api-keys"), 200),
    "DELETE /api/v1/api-keys/{key_id}": (_req("DELETE", "/api-keys/{api_key}"), 404),
    # logging out with the owner's refresh token ends only the caller's own login
    "POST /api/v1/auth/logout": (
        _req("POST", "/auth/logout", json={"refresh_token": "{refresh}"}, fresh_login=True),
        204,
    ),
    "GET /api/v1/sync": (_req("GET", "/sync", params={"after": "0"}), 200),
    # /me is only ever the caller's own account
    "GET /api/v1/me": (_req("GET", "/me"), 200),
    "PATCH /api/v1/me": (_req("PATCH", "/me", json={"display_name": "intruder"}), 200),
    "POST /api/v1/me/password": (
        _req("POST", "/me/password", json={"current_password": "x", "new_password": "y" * 8}),
        403,
    ),
    "DELETE /api/v1/me": (_req("DELETE", "/me", json={"password": "not the password"}), 403),
    "PATCH /api/v1/conversations/{conversation_id}": (
        _req("PATCH", "/conversations/{group}", json={"title": "mine now"}),
        404,
    ),
    "DELETE /api/v1/conversations/{conversation_id}": (
        _req("DELETE", "/conversations/{group}"),
        404,
    ),
    "DELETE /api/v1/sessions/{session_id}": (_req("DELETE", "/sessions/{session}"), 404),
    "GET /api/v1/presence": (_req("GET", "/presence", params={"user_ids": "{member}"}), 200),
    "POST /api/v1/agents/{agent_id}/ag-ui": (
        _req(
            "POST",
            "/agents/{agent}/ag-ui",
            json={
                "threadId": "t",
                "runId": "r",
                "state": None,
                "messages": [{"id": "1", "role": "user", "content": "hi"}],
                "tools": [],
                "context": [],
                "forwardedProps": None,
            },
        ),
        404,
    ),
}

# client -> server frame type -> (frame naming the owner's things, expected error code)
WS_FRAMES: dict[str, tuple[dict[str, Any], str | None]] = {
    "message.send": (
        {
            "type": "message.send",
            "conversation_id": "{group}",
            "content": "x",
            "client_msg_id": "w",
        },
        "not-found",
    ),
    "chat.send": ({"type": "chat.send", "session_id": "{session}", "content": "x"}, "not-found"),
    "message.edit": (
        {
            "type": "message.edit",
            "conversation_id": "{group}",
            "message_id": "{message}",
            "content": "x",
        },
        "not-found",
    ),
    "message.delete": (
        {"type": "message.delete", "conversation_id": "{group}", "message_id": "{message}"},
        "not-found",
    ),
    "reaction.add": (
        {
            "type": "reaction.add",
            "conversation_id": "{group}",
            "message_id": "{message}",
            "emoji": "👍",
        },
        "not-found",
    ),
    "reaction.remove": (
        {
            "type": "reaction.remove",
            "conversation_id": "{group}",
            "message_id": "{message}",
            "emoji": "👍",
        },
        "not-found",
    ),
    "typing": ({"type": "typing", "conversation_id": "{group}"}, "not-found"),
    "read": ({"type": "read", "conversation_id": "{group}", "seq": 1}, "not-found"),
    # no resource named: the answer is about the caller's own inbox / nothing at all
    "sync": ({"type": "sync", "after": 0}, None),
    "ping": ({"type": "ping"}, None),
}


def route_table() -> set[str]:
    """`METHOD /path` of every route the app serves (HTTP and WebSocket, in the schema or not),
    built from the same `create_app` the `chatee api` process runs."""
    app = create_app(Settings(jwt_secret="route-table-only"))
    keys: set[str] = set()
    for route in app.routes:
        # included routers expose their routes through `effective_route_contexts` (FastAPI ≥ 0.16x)
        contexts = getattr(route, "effective_route_contexts", None)
        for ctx in contexts() if contexts else [route]:
            original = getattr(ctx, "original_route", ctx)
            path = getattr(ctx, "path", "") or getattr(original, "path", "")
            methods = getattr(original, "methods", None)
            if type(original).__name__.endswith("WebSocketRoute"):
                keys.add(f"WS {path}")
            elif not methods:
                keys.add(f"ANY {path}")
            else:
                keys.update(f"{m} {path}" for m in methods if m != "HEAD")
    return keys


# `/mcp` (the caller's agents as MCP tools) only lists and calls the caller's own agents; it is
# checked against a foreign agent in test_the_mcp_endpoint_shows_only_your_agents.
# The OpenAI-compatible `/v1` routes name resources by model (an agent) and session header,
# resolved with the same owner checks (chatee.agents.owned_agent, agent_sessions.owned_session);
# another user's agent or session is a 404 in OpenAI's shape: tests/test_openai_compat.py.
# A2A's card and endpoint live outside /api/v1; another user's agent (card and endpoint) and
# task are 404 / not found there: tests/test_a2a.py.
OTHER = (
    {"ANY /mcp"}
    | {"GET /a2a/agents/{agent_id}/.well-known/agent-card.json", "POST /a2a/agents/{agent_id}"}
    | {
        f"{method} {path}"
        for method, path in [
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/responses"),
            ("GET", "/v1/responses/{response_id}"),
        ]
    }
    | {f"{method} /v1/{{path:path}}" for method in ("GET", "POST", "PUT", "PATCH", "DELETE")}
)


def test_every_route_is_in_the_matrix() -> None:
    covered = {key.split("#")[0] for key in MATRIX}
    missing = sorted(route_table() - covered - PUBLIC - set(BY_DESIGN) - OTHER)
    assert not missing, "\n".join(
        f"route {key} is not in the matrix (tests/test_authz_matrix.py)" for key in missing
    )
    from api.ws.frames import HANDLERS

    frames = sorted(set(HANDLERS) - set(WS_FRAMES))
    assert not frames, f"WebSocket frame types not in the matrix: {frames}"


# -- the world: an owner's agent, session, MCP server, group, thread ----------------------------


@pytest.fixture(scope="module")
async def world(stack: Stack) -> AsyncIterator[World]:
    async with httpx.AsyncClient(base_url=stack.base, timeout=30) as http:
        owner, member, intruder = [await _register(http) for _ in range(3)]
        agent = await owner.create_agent(name="owned")
        own_agent = await intruder.create_agent(name="intruders")
        session = await owner.create_session(agent["id"])
        await owner.stream_turn(session["id"], "hello there")  # a stored turn and its events
        r = await owner.request(
            "POST",
            "/mcp/servers",
            json={**SERVER, "headers": {"Authorization": "Bearer owner-mcp-secret"}},
        )
        assert r.status_code == 201, r.text
        server = r.json()
        r = await owner.request(
            "POST", "/conversations", json={"type": "group", "members": [member.user_id]}
        )
        assert r.status_code == 201, r.text
        group = r.json()
        r = await owner.request(
            "POST", f"/conversations/{group['id']}/threads", json={"title": "t"}
        )
        assert r.status_code == 201, r.text
        thread = r.json()
        posted = []
        for target in (group["id"], thread["id"]):
            r = await owner.request(
                "POST", f"/conversations/{target}/messages", json={"content": "private words"}
            )
            assert r.status_code == 201, r.text
            posted.append(r.json())
        message = posted[0]  # in the group: the intruder may not edit, delete or react to it
        kb = await _created(owner, "POST", "/knowledge-bases", json={"name": "owner's kb"})
        doc = await _created(
            owner,
            "POST",
            f"/knowledge-bases/{kb['id']}/documents",
            files={"file": ("plans.txt", b"the owner's secret plans", "text/plain")},
        )
        await _settled(owner, f"/knowledge-bases/{kb['id']}/documents/{doc['id']}")
        agent_memory = await _created(
            owner,
            "POST",
            f"/agents/{agent['id']}/memory",
            json={"key": "motto", "value": "owner only", "scope": "agent"},
        )
        user_memory = await _created(
            owner, "POST", "/memory", json={"agent_id": agent["id"], "key": "k", "value": "v"}
        )
        api_key = await _created(
            owner, "POST", "/api-keys", json={"name": "ci", "scopes": ["agents:read"]}
        )
        ids = {
            "own_agent": own_agent["id"],
            "kb": kb["id"],
            "doc": doc["id"],
            "agent_memory": agent_memory["id"],
            "user_memory": user_memory["id"],
            "api_key": api_key["id"],
            "refresh": owner.refresh,
            "agent": agent["id"],
            "session": session["id"],
            "server": server["id"],
            "group": group["id"],
            "thread": thread["id"],
            "member": member.user_id,
            "message": message["id"],
        }
        made = World(owner, member, intruder, ids)
        made.baseline = await snapshot(made)
        yield made


async def _register(http: httpx.AsyncClient) -> Api:
    username = f"authz-{uuid.uuid4().hex[:12]}"
    r = await http.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    api = Api(http, r.json()["token"], r.json()["user_id"])
    api.username = username  # type: ignore[attr-defined]
    api.refresh = r.json().get("refresh_token", "")  # type: ignore[attr-defined]
    return api


async def _created(api: Api, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    r = await api.request(method, path, **kwargs)
    assert r.status_code in (201, 202), r.text
    return r.json()


async def _settled(api: Api, path: str) -> None:
    """Wait for a document's ingestion to end, so the owner's view stops moving."""
    for _ in range(300):
        r = await api.request("GET", path)
        if r.json()["status"] in ("ready", "failed"):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{path} never settled: {r.text}")


async def snapshot(w: World) -> dict[str, Any]:
    """Everything the owner (and the group's member) can see of the owner's things."""
    i = w.ids
    reads = {
        "agent": (w.owner, f"/agents/{i['agent']}"),
        "agents": (w.owner, "/agents"),
        "session": (w.owner, f"/sessions/{i['session']}"),
        "session messages": (w.owner, f"/sessions/{i['session']}/messages"),
        "server": (w.owner, f"/mcp/servers/{i['server']}"),
        "servers": (w.owner, "/mcp/servers"),
        "group": (w.owner, f"/conversations/{i['group']}"),
        "members": (w.owner, f"/conversations/{i['group']}/members"),
        "threads": (w.owner, f"/conversations/{i['group']}/threads"),
        "group messages": (w.owner, f"/conversations/{i['group']}/messages"),
        "thread messages": (w.owner, f"/conversations/{i['thread']}/messages"),
        "conversations": (w.owner, "/conversations"),
        "owner inbox": (w.owner, "/sync?after=0"),
        "kb": (w.owner, f"/knowledge-bases/{i['kb']}"),
        "kbs": (w.owner, "/knowledge-bases"),
        "doc": (w.owner, f"/knowledge-bases/{i['kb']}/documents/{i['doc']}"),
        "docs": (w.owner, f"/knowledge-bases/{i['kb']}/documents"),
        "agent kbs": (w.owner, f"/agents/{i['agent']}/knowledge-bases"),
        "agent memory": (w.owner, f"/agents/{i['agent']}/memory"),
        "memory": (w.owner, "/memory"),
        "api keys": (w.owner, "/api-keys"),
        "member inbox": (w.member, "/sync?after=0"),
        "member conversations": (w.member, "/conversations"),
    }
    answers = await asyncio.gather(*(api.request("GET", path) for api, path in reads.values()))
    out: dict[str, Any] = {}
    for name, r in zip(reads, answers, strict=True):
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        if name == "session":
            body.pop("state", None)  # live workflow state: history length etc. may move
        out[name] = body
    return out


def normalised(r: httpx.Response, ids: dict[str, str]) -> tuple[int, str, Any]:
    """Status, media type and body with the named ids replaced by their names, and per-request
    fields dropped: what must be identical for the owner's ids and for missing ones."""
    text = r.text
    for name, value in sorted(ids.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{name}>")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VOLATILE | {"id", "workflow_id"}}
    media = r.headers.get("content-type", "").split(";")[0]
    return r.status_code, media, body


def _leaks(text: str, w: World) -> list[str]:
    """The owner's resource ids (not the users' ids, which are public) found in a response."""
    public = ("member", "own_agent")  # user ids are public; the intruder's agent is theirs
    return [k for k, v in w.ids.items() if k not in public and re.search(rf"\b{v}\b", text)]


@pytest.mark.parametrize("route", sorted(MATRIX))
async def test_a_stranger_is_denied_without_a_leak(route: str, world: World) -> None:
    call, expected = MATRIX[route]
    absent = {**MISSING, "own_agent": world.ids["own_agent"]}
    foreign = await call(world.intruder, world.ids)
    missing = await call(world.intruder, absent)
    assert foreign.status_code == expected, f"{route}: {foreign.status_code} {foreign.text}"
    if expected >= 400:
        assert foreign.headers["content-type"].startswith("application/problem+json")
    assert normalised(foreign, world.ids) == normalised(missing, absent), route
    if expected < 400:  # an allowed answer about the caller's own things: none of the owner's
        assert not _leaks(foreign.text, world), f"{route} shows the owner's ids: {foreign.text}"
    assert await snapshot(world) == world.baseline, f"{route} changed the owner's resources"


async def test_every_websocket_frame_is_denied(world: World, stack: Stack) -> None:
    replies: dict[str, list[dict[str, Any]]] = {}
    for ids in (world.ids, MISSING):
        sock = await WsClient(stack.base, world.intruder.token).connect()
        try:
            for kind, (frame, _) in WS_FRAMES.items():
                filled = {k: v.format(**ids) if isinstance(v, str) else v for k, v in frame.items()}
                assert filled["type"] == kind
                reply = await sock.request(filled, within=15)
                replies.setdefault(kind, []).append(reply)
            # following another user's session over the socket is refused the same way
            follow = await WsClient(stack.base, world.intruder.token).connect(
                session_id=ids["session"]
            )
            try:
                err = await follow.wait_for(lambda f: f["type"] == "error", within=15)
                replies.setdefault("?session_id=", []).append(err)
            finally:
                await follow.close()
            await asyncio.sleep(0.2)  # anything pushed late would show up in sock.frames
            assert not _leaks(json.dumps(sock.frames), world), sock.frames
        finally:
            await sock.close()
    for kind, (_, code) in {**WS_FRAMES, "?session_id=": ({}, "not-found")}.items():
        on_foreign, on_missing = replies[kind]
        if code is None:
            assert on_foreign["type"] != "error", (kind, on_foreign)
        else:
            assert (on_foreign["type"], on_foreign["code"]) == ("error", code), (kind, on_foreign)
            assert on_foreign.get("status") == 404, (kind, on_foreign)
        strip = {"ref", "ts", "id", "seq"}
        assert {k: v for k, v in on_foreign.items() if k not in strip} == {
            k: v for k, v in on_missing.items() if k not in strip
        }, kind
    assert await snapshot(world) == world.baseline, "a WebSocket frame changed the owner's things"


async def test_the_mcp_endpoint_shows_only_your_agents(world: World, stack: Stack) -> None:
    """`/mcp`: the intruder's tool list has none of the owner's agents, and calling the
    owner's agent by its tool name is the same error as a tool that does not exist."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    agent = world.ids["agent"]
    headers = {"Authorization": f"Bearer {world.intruder.token}"}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    async with Client(streamable_http_client(f"{stack.base}/mcp", http_client=http)) as client:
        tools = (await client.list_tools()).tools
        assert not any(agent in t.name for t in tools)
        foreign = await client.call_tool(f"owned_{agent}", {"message": "hi"})
        missing = await client.call_tool(f"owned_{MISSING['agent']}", {"message": "hi"})
    assert foreign.is_error and missing.is_error
    text = foreign.content[0].text.replace(agent, "<id>")
    assert text == missing.content[0].text.replace(MISSING["agent"], "<id>")
