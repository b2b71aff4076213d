"""Chatee's agents as an MCP server: streamable HTTP at `/mcp`, bearer JWT like the REST API.

Each of the caller's agents is one tool (`<agent name>_<agent id>`, sanitised) taking
`{message, session_id?}`. A call opens a session when none is given, runs the message as a turn
and answers with the agent's reply (text), plus `{session_id, turn_id, message_id, reply}` as
structured content so the next call can continue the same conversation.

A tool call goes through the public HTTP contract in-process (`POST /api/v1/sessions`,
`POST /api/v1/chat/stream` over an ASGI transport, with the caller's own token), so it gets the
same validation, ownership checks and limits as any other client. The MCP transport runs
stateless with JSON responses: any API process can serve any request.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import mcp_types as types
from fastapi import FastAPI
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from api.deps import authenticate
from api.errors import Problem, problem_response
from chatee.config import Settings
from chatee.logging import get_logger
from chatee.models import Agent

log = get_logger(__name__)

USER_KEY = "chatee.user_id"
TOKEN_KEY = "chatee.token"
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "what to tell the agent"},
        "session_id": {
            "type": "string",
            "description": "continue this session (from an earlier call's structured content); "
            "omit to start a new one",
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}


def agent_tool_name(agent: Agent) -> str:
    """`<name>_<id>`: unique, stable while the agent exists, and valid for every client."""
    suffix = f"_{agent.id}"
    base = re.sub(r"[^a-zA-Z0-9_-]", "_", agent.name).strip("_") or "agent"
    return base[: 64 - len(suffix)] + suffix


class AgentsMcpServer:
    """The ASGI app behind `/mcp`; enter `lifespan()` in the FastAPI app's lifespan."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.turn_timeout = max(
            settings.mcp.call_timeout_seconds, settings.temporal.llm_start_to_close_seconds
        )
        self.server: Server[Any] = Server(
            "chatee",
            version="0.1.0",
            instructions="Each tool is one of your Chatee agents: send it a message, get its "
            "reply. Pass the returned session_id to continue a conversation.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
        )
        self._sessions: StreamableHTTPSessionManager | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        # a session manager runs once: every app start gets a fresh one
        self._sessions = StreamableHTTPSessionManager(
            app=self.server, stateless=True, json_response=True
        )
        async with self._sessions.run():
            yield
        self._sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            user_id, token = await self._authenticate(scope)
        except Problem as exc:  # revocations cannot be checked right now
            await problem_response(exc.status, exc.detail, exc.type)(scope, receive, send)
            return
        if user_id is None:
            response = problem_response(
                401,
                "missing or invalid bearer token",
                "/problems/unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        if self._sessions is None:
            await problem_response(503, "the MCP endpoint is starting")(scope, receive, send)
            return
        scope[USER_KEY], scope[TOKEN_KEY] = user_id, token
        await self._sessions.handle_request(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> tuple[int | None, str]:
        """An access token, or an API key with the `chat` scope (tools run agent turns)."""
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, ""
        principal = await authenticate(self.app.state.resources, token.strip())
        if principal is None or not principal.allows("chat", write=True):
            return None, ""
        return principal.user_id, token.strip()

    # -- MCP handlers ---------------------------------------------------------------------------

    async def _agents(self, user_id: int) -> list[Agent]:
        async with self.app.state.resources.db() as db:
            rows = await db.execute(
                select(Agent).where(Agent.owner_id == user_id).order_by(Agent.id)
            )
            return list(rows.scalars())

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        user_id, _ = _caller(ctx)
        tools = []
        for agent in await self._agents(user_id):
            about = agent.system_prompt.strip().splitlines()[0][:200] if agent.system_prompt else ""
            description = f"Talk to the Chatee agent {agent.name!r} ({agent.model})."
            if about:
                description += f" Its instructions begin: {about}"
            tools.append(
                types.Tool(
                    name=agent_tool_name(agent),
                    title=agent.name,
                    description=description,
                    input_schema=INPUT_SCHEMA,
                )
            )
        return types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        user_id, token = _caller(ctx)
        agent = next(
            (a for a in await self._agents(user_id) if agent_tool_name(a) == params.name), None
        )
        if agent is None:
            return _error(f"there is no agent tool named {params.name!r}")
        args = params.arguments or {}
        message, session_id = args.get("message"), args.get("session_id")
        if not isinstance(message, str) or not message.strip():
            return _error("message: a non-empty string is required")
        if session_id is not None and not isinstance(session_id, str):
            return _error("session_id: must be a string")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://chatee.internal",
            headers={"Authorization": f"Bearer {token}"},
            timeout=self.turn_timeout,
        ) as http:
            return await self._turn(http, agent, message, session_id)

    async def _turn(
        self, http: httpx.AsyncClient, agent: Agent, message: str, session_id: str | None
    ) -> types.CallToolResult:
        if session_id is None:
            r = await http.post("/api/v1/sessions", json={"agent_id": str(agent.id)})
            if r.status_code != 201:
                return _error(f"could not open a session: {_detail(r)}")
            session_id = str(r.json()["id"])
        else:
            r = await http.get(f"/api/v1/sessions/{session_id}")
            if r.status_code != 200:
                return _error(f"session_id: {_detail(r)}")
            if str(r.json().get("agent_id")) != str(agent.id):
                return _error("session_id: that session belongs to another agent")
        try:
            async with contextlib.AsyncExitStack() as stack:
                r = await stack.enter_async_context(
                    http.stream(
                        "POST",
                        "/api/v1/chat/stream",
                        json={"session_id": session_id, "content": message},
                    )
                )
                if r.status_code != 200:
                    await r.aread()
                    return _error(f"the message was not accepted: {_detail(r)}", session_id)
                async for name, data in _sse(r):
                    if name == "turn.completed":
                        reply = str(data.get("content") or "")
                        return types.CallToolResult(
                            content=[types.TextContent(type="text", text=reply)],
                            structured_content={
                                "session_id": session_id,
                                "turn_id": data.get("turn_id"),
                                "message_id": data.get("message_id"),
                                "reply": reply,
                            },
                        )
                    if name == "turn.failed":
                        error = data.get("error") or {}
                        return _error(
                            f"the agent's turn failed ({error.get('type', 'error')}): "
                            f"{error.get('message', '')}",
                            session_id,
                            turn_id=data.get("turn_id"),
                        )
        except httpx.TimeoutException:
            return _error(
                f"the agent did not finish within {self.turn_timeout:g} s; its reply will be "
                "in the session",
                session_id,
            )
        return _error("the event stream ended before the turn did", session_id)


def _caller(ctx: ServerRequestContext[Any, Any]) -> tuple[int, str]:
    scope = ctx.request.scope if ctx.request is not None else {}
    if USER_KEY not in scope:  # cannot happen behind AgentsMcpServer.__call__
        raise PermissionError("unauthenticated MCP request")
    return scope[USER_KEY], scope[TOKEN_KEY]


def _error(text: str, session_id: str | None = None, **extra: Any) -> types.CallToolResult:
    structured = {"session_id": session_id, "error": text, **extra} if session_id else None
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=True,
    )


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail") or r.text)[:500]
    except ValueError:
        return f"HTTP {r.status_code}"


async def _sse(r: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream; comments (keep-alive pings) are skipped."""
    name, data = "message", []
    async for line in r.aiter_lines():
        if not line:
            try:
                parsed = json.loads("\n".join(data)) if data else None
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                yield name, parsed
            name, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
