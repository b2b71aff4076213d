"""The caller's MCP servers: registering them, connecting, their tools, and calling a tool
directly (agents call them in turns, by the names in `Agent.mcp_servers`)."""

from __future__ import annotations

from typing import Any, Literal

from chatee.client.base import BaseClient, segment
from chatee.client.errors import ChateeClientError
from chatee.client.models import McpConnection, McpServer, McpTool, McpToolResult

MCP = "/mcp/servers"
Transport = Literal["streamable_http", "sse", "stdio"]
MASK = "***"  # how the server shows a secret it keeps


class McpApi(BaseClient):
    async def create_mcp_server(
        self,
        name: str,
        transport: Transport,
        *,
        url: str | None = None,
        command: str | None = None,
        args: list[str] | None = None,
        headers: dict[str, str] | None = None,
        tool_policy: dict[str, str] | None = None,
    ) -> McpServer:
        """`url` (and `headers`, e.g. Authorization) for streamable_http and sse; `command`
        and `args` for stdio. `tool_policy`: per tool, allow, deny or approve. Header values
        are stored and never shown again."""
        body = {
            "name": name,
            "transport": transport,
            "url": url,
            "command": command,
            "args": args or [],
            "headers": headers,
            "tool_policy": tool_policy or {},
        }
        return await self._model(McpServer, "POST", MCP, json=body)

    async def mcp_servers(self) -> list[McpServer]:
        return await self._models(McpServer, "GET", MCP)

    async def mcp_server(self, server_id: str) -> McpServer:
        return await self._model(McpServer, "GET", f"{MCP}/{server_id}")

    async def update_mcp_server(self, server_id: str, **fields: Any) -> McpServer:
        """`PUT` replaces the server: fields not given are read from it first, and stored
        header values are kept unless `headers` is given. A URL with a password reads back
        masked, so give `url` again to keep such a server's."""
        current = await self.mcp_server(server_id)
        if "url" not in fields and current.url and f":{MASK}@" in current.url:
            raise ChateeClientError("this server's URL has a password: pass `url` to update it")
        body = {
            **current.model_dump(include={"name", "transport", "url", "command", "args"}),
            "tool_policy": current.tool_policy,
            **fields,
        }  # no `headers`: the server keeps what it stores
        return await self._model(McpServer, "PUT", f"{MCP}/{server_id}", json=body)

    async def delete_mcp_server(self, server_id: str) -> None:
        await self.request("DELETE", f"{MCP}/{server_id}")

    async def connect_mcp_server(self, server_id: str) -> McpConnection:
        """Connect now and refresh its tools (an unreachable server is `Unavailable`)."""
        return await self._model(McpConnection, "POST", f"{MCP}/{server_id}/connect")

    async def mcp_tools(self, server_id: str) -> list[McpTool]:
        """From the cache; a server never connected is connected first."""
        answer = await self.request("GET", f"{MCP}/{server_id}/tools")
        return [McpTool.model_validate(t) for t in answer["tools"]]

    async def call_mcp_tool(
        self, server_id: str, tool: str, arguments: dict[str, Any] | None = None
    ) -> McpToolResult:
        """The tool's result — a tool failing on its own is `is_error`, not an exception; an
        unknown tool is `NotFound`."""
        path = f"{MCP}/{server_id}/tools/{segment(tool)}/call"
        return await self._model(McpToolResult, "POST", path, json={"arguments": arguments or {}})
