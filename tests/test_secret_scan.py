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

import dataclasses
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from chatee.client import (
    ApiError,
    Client,
    Tokens,
    ToolResult,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    Unauthorized,
)
from chatee.devtools.llm_server import LLMServerThread
from chatee.mcp import tool_name
from tests.messaging_support import WsClient
from tests.support import Stack, follow_until, new_session, stored_messages, turn_events

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


def recorded(events: list[TurnEvent]) -> str:
    """Streamed events as the text they came in, for the scan."""
    return json.dumps([dataclasses.asdict(e) for e in events])


async def test_no_secret_in_any_log_or_response(
    stack: Stack, stack_env: dict[str, str], llm: LLMServerThread, demo_server: str
) -> None:
    recorder = Recorder()
    issued: list[str] = []

    def keep(tokens: Tokens | None) -> None:
        if tokens is not None:
            issued.extend([tokens.access_token, tokens.refresh_token or ""])

    hooks = {"response": [recorder.hook]}
    async with (
        httpx.AsyncClient(base_url=stack.base, timeout=60, event_hooks=hooks) as http,
        Client(stack.base, on_tokens=keep, http=http) as chatee,
    ):
        # register, log in (one wrong password first), refresh; `keep` collects every token
        username = f"scan-{uuid.uuid4().hex[:8]}"
        await chatee.register(username, PASSWORD)
        with pytest.raises(Unauthorized):
            await chatee.login(username, WRONG_PASSWORD)
        await chatee.login(username, PASSWORD)
        await chatee.refresh()
        assert len(issued) == 6  # three pairs, all scanned for below

        # an MCP server with a secret header: stored, masked, used
        body = {
            "name": "scan",
            "transport": "streamable_http",
            "url": demo_server,
            "headers": {"Authorization": f"Bearer {MCP_SECRET}"},
        }
        server = await chatee.create_mcp_server(**body)
        assert server.headers == {"Authorization": "***"}
        assert (await chatee.mcp_server(server.id)).headers == {"Authorization": "***"}
        await chatee.connect_mcp_server(server.id)
        called = await chatee.call_mcp_tool(server.id, "echo", {"text": "hi"})
        assert called.is_error is False, called
        # a server that refuses our header: its error must not quote the header back
        wrong = {
            **body,
            "name": "scan-wrong",
            "headers": {"Authorization": f"Bearer x{MCP_SECRET}"},
        }
        refusing = await chatee.create_mcp_server(**wrong)
        with pytest.raises(ApiError):
            await chatee.connect_mcp_server(refusing.id)

        # an agent turn that calls the tool through the worker, and one whose LLM call fails
        session = await new_session(chatee, mcp_servers=[server.id])
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
        events = await turn_events(chatee, session.id, f"use the tool {marker}")
        recorder.seen.append(("POST /chat/stream", recorded(events)))
        assert isinstance(events[-1], TurnCompleted), events[-1]
        assert any(isinstance(e, ToolResult) for e in events)
        events = await turn_events(chatee, session.id, f"this one fails {failing}")
        recorder.seen.append(("POST /chat/stream", recorded(events)))
        assert isinstance(events[-1], TurnFailed), events[-1]
        replay = await follow_until(chatee, session.id, "turn.failed")  # the whole stream
        recorder.seen.append(("SSE replay", recorded(replay)))
        await stored_messages(chatee, session.id)

        # a WebSocket with the token in its query string (the SDK's own socket sends a header)
        assert chatee.tokens is not None
        sock = await WsClient(stack.base, chatee.tokens.access_token).connect()
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
