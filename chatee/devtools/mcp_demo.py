"""A real MCP server for the suite and for trying MCP by hand (the `mcp` SDK's MCPServer,
formerly FastMCP).

    chatee devtools mcp --transport stdio|sse|streamable-http [--host H] [--port N] [--token T]
    python -m chatee.devtools.mcp_demo --transport stdio|sse|streamable-http [--port N] [--token T]

Tools: `add(a, b)`, `echo(text)`, `fail()` (raises), `slow(seconds)` (sleeps), `structured()`
(structured content), `image()` (a large base64 image) and `grow(name)` (adds a tool at run
time and tells the client its tool list changed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from typing import Literal, TypedDict, get_args

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

Transport = Literal["stdio", "sse", "streamable-http"]

server = MCPServer("chatee-demo", version="1.0.0", log_level="WARNING")


class Weather(TypedDict):
    city: str
    temperature: float
    conditions: str


@server.tool(description="Add two numbers.")
def add(a: float, b: float) -> float:
    return a + b


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return f"echo: {text}"


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("the demo tool failed on purpose")


@server.tool(description="Sleep for a while, then answer.")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="Weather, as structured content.")
def structured() -> Weather:
    return {"city": "Lisbon", "temperature": 21.5, "conditions": "sunny"}


@server.tool(description="A large image.")
def image() -> ImageContent:
    data = base64.b64encode(bytes(range(256)) * 64).decode()  # 16 KiB of pixels
    return ImageContent(type="image", data=data, mime_type="image/png")


@server.tool(description="Add a tool named `name` and announce the change.")
async def grow(name: str, ctx: Context) -> str:
    def grown() -> str:
        return f"{name} works"

    server.add_tool(grown, name=name, description="A tool added at run time.")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


def require_token(app: ASGIApp, token: str) -> ASGIApp:
    """Answer 401 to any HTTP request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


def serve(
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
) -> None:
    """Serve in the foreground (what ``chatee devtools mcp`` runs); host/port/token are for the
    HTTP transports only."""
    if transport == "stdio":
        server.run("stdio")
        return
    app = server.sse_app(host=host) if transport == "sse" else server.streamable_http_app(host=host)
    if token:
        app = require_token(app, token)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=get_args(Transport), default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", help="HTTP transports: require this bearer token")
    args = parser.parse_args()
    serve(args.transport, args.host, args.port, args.token)


if __name__ == "__main__":
    main()
