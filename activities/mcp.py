"""`CallMcpTool` (AG_USE_MCP), on the `chatee-tools` queue: run one tool call on an MCP server
and store its result as a `tool` message (claim-check: the workflow gets ids and a summary).

A tool that fails, a server that is down, bad arguments: all become a stored result with
`is_error` — the model reads it and can recover. Only a server that cannot be reached at all
raises, on the first attempts, so Temporal retries (the call never reached the server, so a
retry cannot run it twice); the last attempt stores the error like any other. Idempotent per
(turn, step, tool call): one stored result, one `tool.call` and one `tool.result` event.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import announce, complete, heartbeating
from chatee import session_store
from chatee.mcp import (
    McpConnectFailed,
    McpError,
    ServerConfig,
    effective_policy,
    error_result,
    tool_name,
)
from chatee.models import Agent, McpServer, Message
from chatee.services import Services
from chatee.tracing import span
from workflows import names
from workflows.events import TOOL_CALL, TOOL_RESULT
from workflows.types import StepInput, ToolCallInput, ToolCallResult

CONNECT_ATTEMPTS = 3  # attempts that may raise for an unreachable server before it is a result
EVENT_ARGUMENTS_CHARS = 16 * 1024
EVENT_RESULT_CHARS = 8 * 1024


class ToolActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.CALL_MCP_TOOL)
    async def call_tool(self, inp: ToolCallInput) -> ToolCallResult:
        turn, step, call_id = inp.turn_id, inp.step, inp.tool_call_id
        await announce(self.services.bus, _step(inp))
        key = f"{turn}:{step}:{call_id}:tool"
        name, server, arguments, problem = await self._plan(inp)
        async with self.services.sessionmaker() as db:
            done = (
                await db.execute(select(Message).where(Message.idempotency_key == key))
            ).scalar_one_or_none()
        if done is not None:  # an earlier attempt stored it and failed to report
            return await self._finish(inp, done, _parse(done.content), name)

        await self.services.bus.publish(
            inp.session_id,
            TOOL_CALL,
            {"turn_id": turn, "step": step, "tool_call_id": call_id, "name": name,
             "server_id": inp.server_id, "arguments": _event_arguments(arguments)},
            once_key=f"{turn}:{step}:{call_id}:call",
        )  # fmt: skip
        if problem is not None:
            body = error_result(problem)
        else:
            assert server is not None and isinstance(arguments, dict)
            body = await self._call(server, inp.tool, arguments)
        message = await session_store.store_message_once(
            self.services.sessionmaker,
            idempotency_key=key,
            session_id=int(inp.session_id),
            role="tool",
            content=fit(body, self.services.settings.limits.max_message_bytes),
            turn_id=int(turn),
            tool_call_id=call_id,
            tool_name=name,
        )
        return await self._finish(inp, message, body, name)

    async def _plan(
        self, inp: ToolCallInput
    ) -> tuple[str, McpServer | None, dict[str, Any] | str | None, str | None]:
        """(name shown, server row, arguments, problem): what to call, or why it cannot be."""
        async with self.services.sessionmaker() as db:
            agent = await db.get(Agent, int(inp.agent_id))
            server_id = int(inp.server_id) if inp.server_id.isdigit() else 0
            server = await db.get(McpServer, server_id)
            call = None
            if inp.arguments is None and inp.assistant_message_id.isdigit():
                asked = await db.get(Message, int(inp.assistant_message_id))
                call = next(
                    (c for c in (asked.tool_calls if asked else None) or []
                     if c.get("id") == inp.tool_call_id),
                    None,
                )  # fmt: skip
        if server is None or agent is None or server.owner_id != agent.owner_id:
            name = call["name"] if call else inp.tool
            why = f"the MCP server {inp.server_id} is not available to this agent"
            return name, None, None, why
        name = call["name"] if call else tool_name(server.name, inp.tool)
        if effective_policy(agent, server, name, inp.tool) == "deny":
            return name, None, None, f"the tool {name} is not allowed for this agent"
        if inp.arguments is not None:
            return name, server, dict(inp.arguments), None
        if call is None:
            return name, None, None, f"no tool call {inp.tool_call_id} in the assistant message"
        raw = call.get("arguments") or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError as exc:
            return name, None, raw, f"the arguments are not valid JSON ({exc}): {raw[:200]}"
        if not isinstance(arguments, dict):
            return name, None, raw, "the arguments must be a JSON object"
        return name, server, arguments, None

    async def _call(
        self, server: McpServer, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        cfg = ServerConfig.from_row(server)
        try:
            with span("mcp.call_tool", **{"mcp.server": server.name, "mcp.tool": tool}):
                async with heartbeating():
                    return await self.services.mcp.call_tool(cfg, tool, arguments)
        except McpConnectFailed as exc:
            if activity.info().attempt < CONNECT_ATTEMPTS:
                raise ApplicationError(str(exc), type="McpUnavailable") from None
            return error_result(str(exc))
        except McpError as exc:
            return error_result(str(exc))

    async def _finish(
        self, inp: ToolCallInput, message: Message, body: dict[str, Any], name: str
    ) -> ToolCallResult:
        turn, step, call_id = inp.turn_id, inp.step, inp.tool_call_id
        is_error = bool(body.get("is_error"))
        content = body.get("content") or []
        shown = _parse(fit(body, EVENT_RESULT_CHARS))  # events stay small; the message is whole
        await self.services.bus.publish(
            inp.session_id,
            TOOL_RESULT,
            {"turn_id": turn, "step": step, "tool_call_id": call_id, "name": name,
             "server_id": inp.server_id, "is_error": is_error, "message_id": str(message.id),
             "content": shown.get("content") or [],
             "structured_content": shown.get("structured_content")},
            once_key=f"{turn}:{step}:{call_id}:result",
        )  # fmt: skip
        summary = f"{name}: {'error: ' if is_error else ''}{_preview(content)}"[:200]
        await complete(self.services.bus, _step(inp), summary, message_id=str(message.id))
        return ToolCallResult(message_id=str(message.id), is_error=is_error, summary=summary)


def _step(inp: ToolCallInput) -> StepInput:
    return StepInput(
        session_id=inp.session_id,
        agent_id=inp.agent_id,
        user_id=inp.user_id,
        turn_id=inp.turn_id,
        step=inp.step,
        action="AG_USE_MCP",
        start_turn=inp.start_turn,
    )


def _event_arguments(arguments: dict[str, Any] | str | None) -> Any:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, default=str)
    if len(text) <= EVENT_ARGUMENTS_CHARS:
        return arguments
    return {"_truncated": text[:EVENT_ARGUMENTS_CHARS]}


def _preview(content: list[dict[str, Any]]) -> str:
    for block in content:
        if block.get("type") == "text" and block.get("text"):
            return " ".join(str(block["text"]).split())[:120]
    return f"{len(content)} content block(s)"


def _parse(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {"content": [{"type": "text", "text": text}], "is_error": False}
    return body if isinstance(body, dict) else {"content": [], "is_error": False}


def fit(body: dict[str, Any], limit: int) -> str:
    """The result as JSON text of at most about `limit` characters, still valid JSON: long
    text blocks are cut (marked `truncated`), then a large structured_content is dropped, then
    trailing blocks."""
    text = json.dumps(body, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return text
    body = copy.deepcopy(body)
    structured = json.dumps(body.get("structured_content"), ensure_ascii=False, default=str)
    if len(structured) > limit // 2:
        body["structured_content"] = None
        body["structured_content_omitted"] = True
    blocks = body.get("content") or []
    texts = [b for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
    total = sum(len(b["text"]) for b in texts)
    overhead = len(json.dumps(body, ensure_ascii=False, default=str)) - total
    budget = max(0, limit - overhead - 64 * len(texts) - 64)
    if total > budget:
        for b in texts:
            share = max(64, budget * len(b["text"]) // max(total, 1))
            if len(b["text"]) > share:
                b["text"] = b["text"][:share] + " …"
                b["truncated"] = True
    text = json.dumps(body, ensure_ascii=False, default=str)
    while len(text) > limit and len(blocks) > 1:
        blocks.pop()
        body["content_omitted"] = body.get("content_omitted", 0) + 1
        text = json.dumps(body, ensure_ascii=False, default=str)
    return text
