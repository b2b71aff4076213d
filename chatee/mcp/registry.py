"""Each user's own MCP servers: register, read, replace, delete, connect, list tools, call one.

These are the use cases every surface calls (the REST router today). Another user's server is a
`NotFound`, never a `Forbidden`: from outside the two look the same. A bad configuration is
`McpInvalid` (an `Invalid`), a safety rule `McpRefused`, a server that does not answer in time
`McpTimeout` — all domain errors, rendered by the surface.

Header values may be credentials: they are stored and registered with the log scrubber; a
replace that sends `MASK` for one (or leaves `headers` out) keeps what is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatee.config import Settings
from chatee.errors import Invalid, not_found
from chatee.ids import new_id
from chatee.logging import register_secret
from chatee.mcp.config import ServerConfig
from chatee.mcp.errors import McpError
from chatee.mcp.pool import McpManager
from chatee.mcp.safety import check_server
from chatee.models import McpServer, utcnow
from chatee.services import Services

MASK = "***"  # what a header value reads as from outside; sent back, it keeps the stored one


@dataclass
class ServerSpec:
    """A server as its owner describes it: the body of a create or a replace, well-formed."""

    name: str
    transport: str
    url: str | None = None
    command: str | None = None
    args: list[str] = field(default_factory=list)
    headers: dict[str, str] | None = None  # None keeps the stored headers
    tool_policy: dict[str, str] = field(default_factory=dict)


async def create_server(
    svc: Services, db: AsyncSession, user_id: int, spec: ServerSpec
) -> McpServer:
    row = McpServer(id=new_id(), owner_id=user_id, status="registered")
    await _apply(row, spec, svc.settings)
    db.add(row)
    await db.commit()
    return row


async def list_servers(db: AsyncSession, user_id: int) -> list[McpServer]:
    rows = await db.execute(
        select(McpServer).where(McpServer.owner_id == user_id).order_by(McpServer.id)
    )
    return list(rows.scalars())


async def get_server(db: AsyncSession, user_id: int, server_id: int) -> McpServer:
    row = await db.get(McpServer, server_id)
    if row is None or row.owner_id != user_id:
        raise not_found("MCP server")
    return row


async def replace_server(
    svc: Services, db: AsyncSession, user_id: int, server_id: int, spec: ServerSpec
) -> McpServer:
    row = await get_server(db, user_id, server_id)
    await _apply(row, spec, svc.settings)
    await db.commit()
    await db.refresh(row)
    await svc.mcp.forget(row.id)
    return row


async def delete_server(svc: Services, db: AsyncSession, user_id: int, server_id: int) -> None:
    row = await get_server(db, user_id, server_id)
    await db.delete(row)
    await db.commit()
    await svc.mcp.forget(row.id)


async def connect_server(
    svc: Services, db: AsyncSession, user_id: int, server_id: int
) -> McpServer:
    """The server with its fresh status, server info and tools."""
    row = await get_server(db, user_id, server_id)
    await _connect(row, db, svc.mcp)
    return row


async def server_tools(
    svc: Services, db: AsyncSession, user_id: int, server_id: int
) -> list[dict[str, Any]]:
    """From the cache; a server whose tools were never fetched is connected first."""
    row = await get_server(db, user_id, server_id)
    return row.tools if row.tools is not None else await _connect(row, db, svc.mcp)


async def call_tool(
    svc: Services,
    db: AsyncSession,
    user_id: int,
    server_id: int,
    tool: str,
    arguments: dict[str, Any],
) -> dict[str, Any]:
    """`{content, structured_content, is_error}`: a tool's own failure is a result."""
    row = await get_server(db, user_id, server_id)
    tools = row.tools if row.tools is not None else await _connect(row, db, svc.mcp)
    if not any(t.get("name") == tool for t in tools):
        tools = await _connect(row, db, svc.mcp)  # the cache may be stale
        if not any(t.get("name") == tool for t in tools):
            raise not_found(f"tool {tool!r} on this MCP server")
    return await svc.mcp.call_tool(ServerConfig.from_row(row), tool, arguments)


async def _apply(row: McpServer, spec: ServerSpec, settings: Settings) -> None:
    """Copy the spec onto the row, after the same safety checks every connect runs."""
    headers = dict(spec.headers) if spec.headers is not None else dict(row.headers or {})
    for key, value in list(headers.items()):
        if value == MASK:  # "keep what is stored"
            if key in (row.headers or {}):
                headers[key] = row.headers[key]
            else:
                raise Invalid(f"headers.{key}: there is no stored value to keep")
    if spec.transport == "stdio":
        headers = {}
    for value in headers.values():
        register_secret(value)
    candidate = ServerConfig(
        id=row.id or 0,
        name=spec.name,
        transport=spec.transport,
        url=spec.url,
        command=spec.command,
        args=tuple(spec.args),
        headers=tuple(sorted(headers.items())),
    )
    await check_server(candidate, settings)
    changed = candidate.key != ServerConfig.from_row(row).key if row.transport else True
    row.name = spec.name
    row.transport = spec.transport
    row.url = spec.url
    row.command = spec.command
    row.args = list(spec.args)
    row.headers = headers
    row.tool_policy = dict(spec.tool_policy)
    if changed:  # a different server: what was learnt about the old one no longer holds
        row.status = "registered"
        row.server_info = row.tools = row.tools_refreshed_at = None


async def _connect(row: McpServer, db: AsyncSession, mcp: McpManager) -> list[dict[str, Any]]:
    """Connect (or reuse the pooled session), refresh the tools cache and record the outcome."""
    try:
        connected = await mcp.connect(ServerConfig.from_row(row))
    except McpError:
        row.status = "error"
        await db.commit()
        raise
    row.status = "connected"
    row.server_info = connected.server_info
    row.tools = connected.tools
    row.tools_refreshed_at = utcnow()
    await db.commit()
    return connected.tools
