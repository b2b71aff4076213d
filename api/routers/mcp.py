"""MCP server registry: each user's own servers (anyone else's is a 404), connecting to them,
their tools, and calling a tool directly. The flows are `chatee/mcp/registry.py`; this module
parses, renders and keeps the HTTP contract.

Header values may be credentials: they are stored, registered with the log scrubber, and only
ever returned as `***`. A `PUT` that sends `***` (or leaves `headers` out) keeps what is stored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.deps import DB, Svc, UserId, parse_id
from chatee.mcp import registry
from chatee.mcp.registry import MASK
from chatee.models import McpServer
from chatee.timefmt import Timestamp

router = APIRouter(prefix="/mcp/servers", tags=["mcp"])

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
    tools_refreshed_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


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


def _spec(body: McpServerIn) -> registry.ServerSpec:
    return registry.ServerSpec(**body.model_dump())


def _id(server_id: str) -> int:
    return parse_id(server_id, "MCP server")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_server(body: McpServerIn, user_id: UserId, db: DB, svc: Svc) -> McpServerOut:
    return server_out(await registry.create_server(svc, db, user_id, _spec(body)))


@router.get("")
async def list_servers(user_id: UserId, db: DB) -> list[McpServerOut]:
    return [server_out(r) for r in await registry.list_servers(db, user_id)]


@router.get("/{server_id}")
async def get_server(server_id: str, user_id: UserId, db: DB) -> McpServerOut:
    return server_out(await registry.get_server(db, user_id, _id(server_id)))


@router.put("/{server_id}")
async def replace_server(
    server_id: str, body: McpServerIn, user_id: UserId, db: DB, svc: Svc
) -> McpServerOut:
    row = await registry.replace_server(svc, db, user_id, _id(server_id), _spec(body))
    return server_out(row)


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_server(server_id: str, user_id: UserId, db: DB, svc: Svc) -> Response:
    await registry.delete_server(svc, db, user_id, _id(server_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{server_id}/connect")
async def connect_server(server_id: str, user_id: UserId, db: DB, svc: Svc) -> ConnectOut:
    row = await registry.connect_server(svc, db, user_id, _id(server_id))
    return ConnectOut(
        status=row.status, server_info=row.server_info or {}, tools_count=len(row.tools or [])
    )


@router.get("/{server_id}/tools")
async def list_tools(server_id: str, user_id: UserId, db: DB, svc: Svc) -> ToolsOut:
    """From the cache; a server whose tools were never fetched is connected first."""
    tools = await registry.server_tools(svc, db, user_id, _id(server_id))
    return ToolsOut(tools=[ToolOut(**_tool(t)) for t in tools])


@router.post("/{server_id}/tools/{tool}/call")
async def call_tool(
    server_id: str, tool: str, body: CallIn, user_id: UserId, db: DB, svc: Svc
) -> CallOut:
    result = await registry.call_tool(svc, db, user_id, _id(server_id), tool, body.arguments)
    return CallOut(**result)


def _tool(entry: dict[str, Any]) -> dict[str, Any]:
    schema = entry.get("input_schema")
    return {
        "name": str(entry.get("name", "")),
        "description": str(entry.get("description") or ""),
        "input_schema": schema if isinstance(schema, dict) else {},
    }
