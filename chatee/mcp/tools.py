"""The tools agents see: each server's cached tool list, namespaced, filtered by policy and put
in the shape a model's `tools=[...]` takes; and the hook that keeps that cache fresh."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.logging import get_logger
from chatee.mcp.config import ServerConfig
from chatee.mcp.connection import ToolsChanged
from chatee.mcp.errors import McpError
from chatee.mcp.pool import McpManager
from chatee.models import Agent, McpServer, utcnow

log = get_logger(__name__)


def persist_tools(db: async_sessionmaker[AsyncSession]) -> ToolsChanged:
    """An `on_tools_changed` hook that keeps `mcp_servers.tools` up to date."""

    async def save(server_id: int, tools: list[dict[str, Any]]) -> None:
        async with db() as session:
            await session.execute(
                update(McpServer)
                .where(McpServer.id == server_id)
                .values(tools=tools, tools_refreshed_at=utcnow())
            )
            await session.commit()

    return save


@dataclass
class AgentTool:
    name: str  # "<server_name>__<tool>", sanitised to ^[a-zA-Z0-9_-]{1,64}$
    description: str
    input_schema: dict[str, Any]
    server_id: int
    tool: str  # the name on the server
    policy: str = "allow"  # allow | approve (denied tools are left out)
    server_name: str = field(default="", repr=False)


def tool_name(server_name: str, tool: str) -> str:
    """The name a model sees: `<server>__<tool>`, safe for every provider's function names."""
    raw = f"{server_name}__{tool}"
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", raw)
    if len(name) > 64:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


def effective_policy(agent: Agent, server: McpServer, name: str, tool: str) -> str:
    """The agent's entry for the namespaced name wins, then the server's entry for the tool."""
    agent_policy = (agent.tool_policy or {}).get(name)
    if agent_policy:
        return str(agent_policy)
    return str((server.tool_policy or {}).get(tool, "allow"))


async def agent_servers(db: AsyncSession, agent: Agent) -> list[McpServer]:
    """The agent's servers that its owner registered, in the agent's order."""
    ids = [int(s) for s in agent.mcp_servers or [] if str(s).isdigit()]
    if not ids:
        return []
    rows = await db.execute(
        select(McpServer).where(McpServer.id.in_(ids), McpServer.owner_id == agent.owner_id)
    )
    by_id = {row.id: row for row in rows.scalars()}
    return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]


async def agent_tools(
    db: AsyncSession, agent: Agent, mcp: McpManager | None = None
) -> list[AgentTool]:
    """The tools an agent may offer its model, from the servers' cached tool lists. Tools whose
    policy is "deny" are left out. With `mcp`, a server whose tools were never fetched is
    connected first (best effort: an unreachable server just contributes no tools)."""
    out: list[AgentTool] = []
    seen: set[str] = set()
    for server in await agent_servers(db, agent):
        tools = server.tools
        if tools is None and mcp is not None:
            tools = await _fetch_and_store(db, mcp, server)
        for entry in tools or []:
            tool = str(entry.get("name", ""))
            if not tool:
                continue
            name = tool_name(server.name, tool)
            if name in seen:  # two servers sanitise to the same name: keep both, distinctly
                digest = hashlib.sha1(f"{server.id}:{tool}".encode()).hexdigest()[:8]
                name = f"{name[:55]}_{digest}"
            policy = effective_policy(agent, server, name, tool)
            if policy == "deny":
                continue
            seen.add(name)
            schema = entry.get("input_schema")
            out.append(
                AgentTool(
                    name=name,
                    description=str(entry.get("description") or ""),
                    input_schema=schema if isinstance(schema, dict) else {},
                    server_id=server.id,
                    tool=tool,
                    policy=policy,
                    server_name=server.name,
                )
            )
    return out


async def _fetch_and_store(
    db: AsyncSession, mcp: McpManager, server: McpServer
) -> list[dict[str, Any]] | None:
    try:
        connected = await mcp.connect(ServerConfig.from_row(server))
    except McpError as exc:
        log.warning("mcp server unavailable for an agent", server=server.name, error=str(exc))
        return None
    server.tools = connected.tools
    server.server_info = connected.server_info
    server.tools_refreshed_at = utcnow()
    server.status = "connected"
    await db.commit()
    return connected.tools


def openai_tools(tools: Sequence[AgentTool]) -> list[dict[str, Any]]:
    """The chat-completions `tools=[...]` shape; JSON Schemas pass through as they are."""
    out = []
    for tool in tools:
        parameters = tool.input_schema or {"type": "object", "properties": {}}
        if "type" not in parameters:
            parameters = {"type": "object", **parameters}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": parameters,
                },
            }
        )
    return out
