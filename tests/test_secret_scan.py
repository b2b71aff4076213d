"""Secrets never reach a log line or a response.

A full scenario runs through the real API and worker processes: register and log in, refresh,
register an MCP server whose header carries a secret, connect it and call a tool, an agent turn
through the scripted LLM (which the provider API key unlocks) that calls that tool, a turn whose
LLM call fails with an error quoting the key back (as providers do), a WebSocket with the token
in its query string, a wrong password. Then every process's log, and every response body and
header the clients received, is searched for the JWT secret, the provider API key, the MCP
header value, the passwords, and the issued tokens (those only where they are not the point of
the response: register / login / refresh answers).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from chatee.devtools.llm_server import LLMServerThread
from chatee.mcp import tool_name
from tests.messaging_support import WsClient
from tests.support import Api, Stack

MCP_SECRET = "mcp-hdr-" + uuid.uuid4().hex
PASSWORD = "pw-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo MCP server over streamable HTTP, refusing requests without the secret."""
    from tests.test_mcp import DemoServer

    server = DemoServer("streamable-http", tmp_path_factory.mktemp("scan") / "demo.log", MCP_SECRET)
    server.start().wait()
    yield server.url
    server.kill()


class Recorder:
    """Every response body and header a client saw, to scan afterwards."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (request, text)

    async def hook(self, response: httpx.Response) -> None:
        where = f"{response.request.method} {response.request.url.path}"
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append((where, headers))
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return  # streams are recorded event by event where they are read
        await response.aread()
        self.seen.append((where, response.text))


async def test_no_secret_in_any_log_or_response(
    stack: Stack, stack_env: dict[str, str], llm: LLMServerThread, demo_server: str
) -> None:
    recorder = Recorder()
    issued: list[str] = []
    hooks = {"response": [recorder.hook]}
    async with httpx.AsyncClient(base_url=stack.base, timeout=60, event_hooks=hooks) as http:
        # register, log in (one wrong password first), refresh
        username = f"scan-{uuid.uuid4().hex[:8]}"
        creds = {"username": username, "password": PASSWORD}
        r = await http.post("/api/v1/auth/register", json=creds)
        assert r.status_code == 201, r.text
        issued += [r.json()["token"], r.json().get("refresh_token", "")]
        bad = await http.post("/api/v1/auth/login", json={**creds, "password": WRONG_PASSWORD})
        assert bad.status_code == 401
        r = await http.post("/api/v1/auth/login", json=creds)
        assert r.status_code == 200
        issued += [r.json()["token"], r.json().get("refresh_token", "")]
        if r.json().get("refresh_token"):
            fresh = await http.post(
                "/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}
            )
            assert fresh.status_code == 200, fresh.text
            issued += [fresh.json()["token"], fresh.json()["refresh_token"]]
        api = Api(http, issued[-2], r.json()["user_id"])

        # an MCP server with a secret header: stored, masked, used
        body = {
            "name": "scan",
            "transport": "streamable_http",
            "url": demo_server,
            "headers": {"Authorization": f"Bearer {MCP_SECRET}"},
        }
        r = await api.request("POST", "/mcp/servers", json=body)
        assert r.status_code == 201, r.text
        server = r.json()
        assert server["headers"] == {"Authorization": "***"}
        assert (await api.request("GET", f"/mcp/servers/{server['id']}")).json()["headers"] == {
            "Authorization": "***"
        }
        r = await api.request("POST", f"/mcp/servers/{server['id']}/connect")
        assert r.status_code == 200, r.text
        r = await api.request(
            "POST",
            f"/mcp/servers/{server['id']}/tools/echo/call",
            json={"arguments": {"text": "hi"}},
        )
        assert r.status_code == 200 and r.json()["is_error"] is False, r.text
        # a server that refuses our header: its error must not quote the header back
        wrong = {
            **body,
            "name": "scan-wrong",
            "headers": {"Authorization": f"Bearer x{MCP_SECRET}"},
        }
        r = await api.request("POST", "/mcp/servers", json=wrong)
        r = await api.request("POST", f"/mcp/servers/{r.json()['id']}/connect")
        assert r.status_code >= 400

        # an agent turn that calls the tool through the worker, and one whose LLM call fails
        session = await api.new_session(mcp_servers=[server["id"]])
        marker, failing = uuid.uuid4().hex, uuid.uuid4().hex
        key = stack_env["CHATEE_LLM_OPENAI_API_KEY"]
        llm.llm.script(
            marker,
            [
                {"tool_calls": [{"name": tool_name("scan", "echo"), "arguments": {"text": "x"}}]},
                "done",
            ],
        )
        llm.llm.script(
            failing,
            [{"error": {"status": 401, "message": f"Incorrect API key provided: {key}"}}] * 5,
        )
        events = await api.stream_turn(session["id"], f"use the tool {marker}")
        recorder.seen.append(("POST /chat/stream", json.dumps(events)))
        assert events[-1]["event"] == "turn.completed", events[-1]
        assert any(e["event"] == "tool.result" for e in events)
        events = await api.stream_turn(session["id"], f"this one fails {failing}")
        recorder.seen.append(("POST /chat/stream", json.dumps(events)))
        assert events[-1]["event"] == "turn.failed", events[-1]
        async with aconnect_sse(  # the session's whole event stream, replayed
            http,
            "GET",
            f"/api/v1/sessions/{session['id']}/events",
            params={"after": "0"},
            headers=api.headers,
        ) as source:
            async for sse in source.aiter_sse():
                recorder.seen.append(("SSE replay", sse.data))
                if sse.event == "turn.failed":
                    break
        await api.messages(session["id"])

        # a WebSocket with the token in its query string
        sock = await WsClient(stack.base, api.token).connect()
        try:
            pong = await sock.request({"type": "ping"})
            assert pong["type"] == "pong"
            recorder.seen.append(("WS", json.dumps(sock.frames)))
        finally:
            await sock.close()

    secrets = {
        "JWT secret": stack_env["CHATEE_JWT_SECRET"],
        "provider API key": stack_env["CHATEE_LLM_OPENAI_API_KEY"],
        "MCP header value": MCP_SECRET,
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
    }
    tokens = {f"issued token {i}": t for i, t in enumerate(issued) if t}
    logs = {p.log_path.name: p.log() for p in stack.processes}
    assert all(logs.values()), "the processes logged nothing: the scan would prove nothing"
    leaks = [
        f"{what} in log {name}: ...{_around(text, value)}..."
        for name, text in logs.items()
        for what, value in {**secrets, **tokens}.items()
        if value in text
    ]
    token_answers = ("/auth/register", "/auth/login", "/auth/refresh")
    for where, text in recorder.seen:
        for what, value in secrets.items():
            if value in text:
                leaks.append(f"{what} in a response to {where}: ...{_around(text, value)}...")
        if not where.endswith(token_answers):
            for what, value in tokens.items():
                if value in text:
                    leaks.append(f"{what} in a response to {where}")
    assert len(recorder.seen) > 20
    assert not leaks, "\n".join(leaks)


def _around(text: str, value: str) -> str:
    at = text.index(value)
    return text[max(0, at - 80) : at + len(value) + 40].replace(value, "<SECRET>")
