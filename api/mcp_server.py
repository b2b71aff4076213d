"""Chatee's agents as an MCP server: streamable HTTP at `/mcp`, bearer JWT like the REST API.

Each of the caller's agents is one tool (`<agent name>_<agent id>`, sanitised) taking
`{message, session_id?}`. A call opens a session when none is given, runs the message as a turn
and answers with the agent's reply (text), plus `{session_id, turn_id, message_id, reply}` as
structured content so the next call can continue the same conversation.

A tool call runs the same use cases as `POST /api/v1/sessions` and `POST /api/v1/chat/stream`
(`chatee.agent_sessions`), so it gets the same validation, ownership checks and limits as any
other client; a refusal comes back as a tool error. The MCP transport runs stateless: any API
process can serve any request. A call that sends a progress token (`_meta.progressToken`) hears
the turn while it runs — MCP progress notifications carrying step names and the reply's text as
it streams — so its response is an SSE stream rather than one JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
from fastapi import FastAPI
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from api.deps import authenticate
from api.errors import domain_response, problem_response
from chatee import agent_sessions, agents
from chatee.bus import Event
from chatee.config import Settings
from chatee.errors import ChateeError, Unavailable
from chatee.ids import parse_id
from chatee.logging import get_logger
from chatee.models import Agent
from chatee.services import Services
from workflows import events

log = get_logger(__name__)

USER_KEY = "chatee.user_id"
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
        # SSE responses: a JSON one has no room for a call's progress notifications
        self._sessions = StreamableHTTPSessionManager(app=self.server, stateless=True)
        async with self._sessions.run():
            yield
        self._sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            user_id = await self._authenticate(scope)
        except Unavailable as exc:  # revocations cannot be checked right now
            await domain_response(exc)(scope, receive, send)
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
        scope[USER_KEY] = user_id
        await self._sessions.handle_request(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> int | None:
        """An access token, or an API key with the `chat` scope (tools run agent turns)."""
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        principal = await authenticate(self.app.state.services, token.strip())
        if principal is None or not principal.allows("chat", write=True):
            return None
        return principal.user_id

    # -- MCP handlers ---------------------------------------------------------------------------

    async def _agents(self, user_id: int) -> list[Agent]:
        async with self.app.state.services.sessionmaker() as db:
            return await agents.list_agents(db, user_id)

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        user_id = _caller(ctx)
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
        user_id = _caller(ctx)
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
        svc: Services = self.app.state.services
        retry = await svc.limiter.hit(
            "user-writes", str(user_id), svc.settings.security.user_writes_per_window
        )
        if retry is not None:
            return _error(f"too many writes from this user; retry in {retry} s")
        return await self._turn(ctx, svc, user_id, agent, message, session_id)

    async def _turn(
        self,
        ctx: ServerRequestContext[Any, Any],
        svc: Services,
        user_id: int,
        agent: Agent,
        message: str,
        session_id: str | None,
    ) -> types.CallToolResult:
        async with svc.sessionmaker() as db:
            try:
                if session_id is None:
                    session = await agent_sessions.start_session(svc, db, agent, None)
                else:
                    session = await agent_sessions.owned_session(
                        db, user_id, parse_id(session_id, "session")
                    )
            except ChateeError as exc:
                what = "could not open a session" if session_id is None else "session_id"
                return _error(f"{what}: {exc.detail}")
        if session.agent_id != agent.id:
            return _error("session_id: that session belongs to another agent")
        session_id = str(session.id)
        try:
            accepted = await agent_sessions.submit_turn(svc, user_id, session.id, message, None)
        except ChateeError as exc:
            return _error(f"the message was not accepted: {exc.detail}", session_id)
        stream = agent_sessions.turn_events(svc, session.id, accepted.after, accepted.turn_id)
        heard = 0
        try:
            async with asyncio.timeout(self.turn_timeout):
                async for event in stream:
                    note = progress_note(event)
                    if note is not None:  # a no-op unless the call asked for progress
                        heard += 1
                        await ctx.session.report_progress(heard, message=note)
                    ending = agent_sessions.turn_ending(event)
                    if isinstance(ending, agent_sessions.Done):
                        return types.CallToolResult(
                            content=[types.TextContent(type="text", text=ending.content)],
                            structured_content={
                                "session_id": session_id,
                                "turn_id": str(accepted.turn_id),
                                "message_id": ending.message_id,
                                "reply": ending.content,
                            },
                        )
                    if isinstance(ending, agent_sessions.Failed):
                        return _error(
                            f"the agent's turn failed ({ending.type}): {ending.message}",
                            session_id,
                            turn_id=str(accepted.turn_id),
                        )
        except TimeoutError:
            return _error(
                f"the agent did not finish within {self.turn_timeout:g} s; its reply will be "
                "in the session",
                session_id,
            )
        return _error("the event stream ended before the turn did", session_id)


def progress_note(event: Event) -> str | None:
    """What a progress notification says of a turn's event: the step that starts, the reply's
    text as it streams, the tools it calls (None: nothing worth a notification)."""
    data = event.data
    match event.event:
        case events.STEP_STARTED:
            return f"step {data.get('step')}: {data.get('action')}"
        case events.MESSAGE_DELTA:
            return data.get("text") or None
        case events.STEP_RETRY:
            return f"step {data.get('step')} runs again ({data.get('reason')}): drop its text"
        case events.TOOL_CALL:
            return f"calling {data.get('name')}"
        case events.TOOL_RESULT:
            return f"{data.get('name') or 'the tool'} answered"
        case events.HUMAN_REQUEST:
            return f"waiting for a person: {data.get('prompt')}"
    return None


def _caller(ctx: ServerRequestContext[Any, Any]) -> int:
    scope = ctx.request.scope if ctx.request is not None else {}
    if USER_KEY not in scope:  # cannot happen behind AgentsMcpServer.__call__
        raise PermissionError("unauthenticated MCP request")
    return scope[USER_KEY]


def _error(text: str, session_id: str | None = None, **extra: Any) -> types.CallToolResult:
    structured = {"session_id": session_id, "error": text, **extra} if session_id else None
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=True,
    )
