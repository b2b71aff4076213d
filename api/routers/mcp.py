"""MCP server registry: each user's own servers (anyone else's is a 404), connecting to them,
their tools, and calling a tool directly.

Header values may be credentials: they are stored, registered with the log scrubber, and only
ever returned as `***`. A `PUT` that sends `***` (or leaves `headers` out) keeps what is stored.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select

from api.deps import DB, Res, UserId, parse_id
from api.errors import Problem, not_found
from chatee.config import Settings
from chatee.ids import new_id
from chatee.logging import register_secret
from chatee.mcp import McpError, McpManager, ServerConfig, check_server
from chatee.models import McpServer, utcnow

router = APIRouter(prefix="/mcp/servers", tags=["mcp"])

MASK = "***"
Transport = Literal["streamable_http", "sse", "stdio"]
ToolPolicy = Literal["allow", "deny", "approve"]
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)")


class McpServerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    transport: Transport
    url: str | None = Field(None, max_length=2048, description="for streamable_http and sse")
    command: str | None = Field(None, max_length=1024, description="for stdio")
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    headers: dict[str, Annotated[str, Field(max_length=8192)]] | None = Field(
        None,
        max_length=32,
        description="sent with every HTTP request (e.g. Authorization); returned masked",
    )
    tool_policy: dict[str, ToolPolicy] = Field(
        default_factory=dict, description="per tool of this server: allow, deny or approve"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        name = name.strip()
        if not name:
            raise ValueError("must not be blank")
        return name

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (headers or {}).items():
            if not HEADER_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid header name")
            if "\n" in value or "\r" in value:
                raise ValueError(f"the value of {key!r} contains a line break")
        return headers

    @model_validator(mode="after")
    def _fits_transport(self) -> McpServerIn:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("command is required for the stdio transport")
            if self.url:
                raise ValueError("url is only for the streamable_http and sse transports")
            if self.headers:
                raise ValueError("headers are only for the streamable_http and sse transports")
        else:
            if not self.url:
                raise ValueError(f"url is required for the {self.transport} transport")
            if self.command or self.args:
                raise ValueError("command and args are only for the stdio transport")
        return self


class McpServerOut(BaseModel):
    id: str
    name: str
    transport: str
    url: str | None
    command: str | None
    args: list[str]
    headers: dict[str, str] = Field(description="header names; values are never returned")
    tool_policy: dict[str, str]
    status: str
    server_info: dict[str, Any] | None
    tools_count: int | None
    tools_refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ConnectOut(BaseModel):
    status: str
    server_info: dict[str, Any]
    tools_count: int


class ToolOut(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class ToolsOut(BaseModel):
    tools: list[ToolOut]


class CallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] = Field(default_factory=dict)


class CallOut(BaseModel):
    content: list[dict[str, Any]]
    structured_content: Any = None
    is_error: bool


def manager(request: Request) -> McpManager:
    return request.app.state.mcp


Manager = Annotated[McpManager, Depends(manager)]


def server_out(row: McpServer) -> McpServerOut:
    return McpServerOut(
        id=str(row.id),
        name=row.name,
        transport=row.transport,
        url=URL_PASSWORD.sub(rf"\1{MASK}\2", row.url) if row.url else None,
        command=row.command,
        args=list(row.args or []),
        headers={name: MASK for name in row.headers or {}},
        tool_policy=dict(row.tool_policy or {}),
        status=row.status,
        server_info=row.server_info,
        tools_count=len(row.tools) if row.tools is not None else None,
        tools_refreshed_at=row.tools_refreshed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def problem(exc: McpError) -> Problem:
    kind = {403: "mcp-refused", 422: "validation", 504: "mcp-timeout"}.get(exc.status, "mcp-error")
    return Problem(exc.status, str(exc), f"/problems/{kind}")


async def _owned(db: DB, user_id: int, server_id: str) -> McpServer:
    row = await db.get(McpServer, parse_id(server_id, "MCP server"))
    if row is None or row.owner_id != user_id:
        raise not_found("MCP server")
    return row


async def _apply(row: McpServer, body: McpServerIn, settings: Settings) -> None:
    """Copy the body onto the row, after the same safety checks every connect runs."""
    headers = dict(body.headers) if body.headers is not None else dict(row.headers or {})
    for key, value in list(headers.items()):
        if value == MASK:  # "keep what is stored"
            if key in (row.headers or {}):
                headers[key] = row.headers[key]
            else:
                detail = f"headers.{key}: there is no stored value to keep"
                raise Problem(422, detail, "/problems/validation")
    if body.transport == "stdio":
        headers = {}
    for value in headers.values():
        register_secret(value)
    candidate = ServerConfig(
        id=row.id or 0,
        name=body.name,
        transport=body.transport,
        url=body.url,
        command=body.command,
        args=tuple(body.args),
        headers=tuple(sorted(headers.items())),
    )
    try:
        await check_server(candidate, settings)
    except McpError as exc:
        raise problem(exc) from None
    changed = candidate.key != _config(row).key if row.transport else True
    row.name = body.name
    row.transport = body.transport
    row.url = body.url
    row.command = body.command
    row.args = list(body.args)
    row.headers = headers
    row.tool_policy = dict(body.tool_policy)
    if changed:  # a different server: what was learnt about the old one no longer holds
        row.status = "registered"
        row.server_info = row.tools = row.tools_refreshed_at = None


def _config(row: McpServer) -> ServerConfig:
    return ServerConfig.from_row(row)


async def _connect(row: McpServer, db: DB, mcp: McpManager) -> list[dict[str, Any]]:
    """Connect (or reuse the pooled session), refresh the tools cache and record the outcome."""
    try:
        connected = await mcp.connect(_config(row))
    except McpError as exc:
        row.status = "error"
        await db.commit()
        raise problem(exc) from None
    row.status = "connected"
    row.server_info = connected.server_info
    row.tools = connected.tools
    row.tools_refreshed_at = utcnow()
    await db.commit()
    return connected.tools


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_server(body: McpServerIn, user_id: UserId, db: DB, res: Res) -> McpServerOut:
    row = McpServer(id=new_id(), owner_id=user_id, status="registered")
    await _apply(row, body, res.settings)
    db.add(row)
    await db.commit()
    return server_out(row)


@router.get("")
async def list_servers(user_id: UserId, db: DB) -> list[McpServerOut]:
    rows = await db.execute(
        select(McpServer).where(McpServer.owner_id == user_id).order_by(McpServer.id)
    )
    return [server_out(r) for r in rows.scalars()]


@router.get("/{server_id}")
async def get_server(server_id: str, user_id: UserId, db: DB) -> McpServerOut:
    return server_out(await _owned(db, user_id, server_id))


@router.put("/{server_id}")
async def replace_server(
    server_id: str, body: McpServerIn, user_id: UserId, db: DB, res: Res, mcp: Manager
) -> McpServerOut:
    row = await _owned(db, user_id, server_id)
    await _apply(row, body, res.settings)
    await db.commit()
    await db.refresh(row)
    await mcp.forget(row.id)
    return server_out(row)


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_server(server_id: str, user_id: UserId, db: DB, mcp: Manager) -> Response:
    row = await _owned(db, user_id, server_id)
    await db.delete(row)
    await db.commit()
    await mcp.forget(row.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{server_id}/connect")
async def connect_server(server_id: str, user_id: UserId, db: DB, mcp: Manager) -> ConnectOut:
    row = await _owned(db, user_id, server_id)
    tools = await _connect(row, db, mcp)
    return ConnectOut(status=row.status, server_info=row.server_info or {}, tools_count=len(tools))


@router.get("/{server_id}/tools")
async def list_tools(server_id: str, user_id: UserId, db: DB, mcp: Manager) -> ToolsOut:
    """From the cache; a server whose tools were never fetched is connected first."""
    row = await _owned(db, user_id, server_id)
    tools = row.tools if row.tools is not None else await _connect(row, db, mcp)
    return ToolsOut(tools=[ToolOut(**_tool(t)) for t in tools])


@router.post("/{server_id}/tools/{tool}/call")
async def call_tool(
    server_id: str, tool: str, body: CallIn, user_id: UserId, db: DB, mcp: Manager
) -> CallOut:
    row = await _owned(db, user_id, server_id)
    tools = row.tools if row.tools is not None else await _connect(row, db, mcp)
    if not any(t.get("name") == tool for t in tools):
        tools = await _connect(row, db, mcp)  # the cache may be stale
        if not any(t.get("name") == tool for t in tools):
            raise not_found(f"tool {tool!r} on this MCP server")
    try:
        result = await mcp.call_tool(_config(row), tool, body.arguments)
    except McpError as exc:
        raise problem(exc) from None
    return CallOut(**result)


def _tool(entry: dict[str, Any]) -> dict[str, Any]:
    schema = entry.get("input_schema")
    return {
        "name": str(entry.get("name", "")),
        "description": str(entry.get("description") or ""),
        "input_schema": schema if isinstance(schema, dict) else {},
    }
