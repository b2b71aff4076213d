"""One long-lived session with one MCP server: connecting (with backoff), the owner task that
holds the SDK's context managers, the transports, and the tools cache it keeps fresh."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, UNSUPPORTED_PROTOCOL_VERSION

from chatee.config import Settings
from chatee.logging import get_logger
from chatee.mcp.config import ServerConfig
from chatee.mcp.errors import (
    McpConnectFailed,
    McpError,
    McpTimeout,
    McpUnavailable,
    describe,
    leaves_of,
)
from chatee.mcp.results import server_info_dict, tool_entry
from chatee.mcp.safety import check_server

log = get_logger(__name__)

CLIENT_INFO = types.Implementation(name="chatee", version="0.1.0")
MAX_BACKOFF_SECONDS = 30.0

cleanups: set[asyncio.Task[Any]] = set()


def background(task: asyncio.Task[Any]) -> None:
    """Keep a clean-up task alive until it ends (the loop only holds weak references)."""
    cleanups.add(task)
    task.add_done_callback(cleanups.discard)


ToolsChanged = Callable[[int, list[dict[str, Any]]], Awaitable[None]]


class Connection:
    """One pooled session. A background task owns the SDK context managers (anyio needs
    them entered and left in one task); callers use the connected `Client` concurrently."""

    def __init__(self, cfg: ServerConfig, settings: Settings, on_tools_changed: Any) -> None:
        self.cfg = cfg
        self.settings = settings
        self.on_tools_changed: ToolsChanged | None = on_tools_changed
        self.slots = asyncio.Semaphore(settings.mcp.max_concurrency_per_server)
        self.lock = asyncio.Lock()
        self.client: Client | None = None
        self.server_info: dict[str, Any] = {}
        self.tools: list[dict[str, Any]] | None = None
        self.suspect = False  # a call timed out: probe the session before trusting it again
        self.in_flight = 0
        self.last_used = time.monotonic()
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._refresh: asyncio.Task[None] | None = None
        self.http_error: str | None = None

    # lifecycle -------------------------------------------------------------------------------

    async def session(self) -> Client:
        """The connected client, connecting (or reconnecting) first when needed."""
        timeout = self.settings.mcp.connect_timeout_seconds
        async with self.lock:
            if self.client is not None and self.suspect:
                try:
                    async with asyncio.timeout(timeout):
                        await self.client.list_tools()
                    self.suspect = False
                except Exception as exc:  # the session is dead or wedged: start over
                    log.info("mcp session probe failed", server=self.cfg.name, error=describe(exc))
                    self.broken(self.client)
            if self.client is not None:
                return self.client
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                if wait > timeout:
                    raise McpConnectFailed(
                        f"{self.cfg.label} is unreachable ({self._last_error}); "
                        f"the next connection attempt is in {wait:.0f} s"
                    )
                await asyncio.sleep(wait)
            await check_server(self.cfg, self.settings)
            try:
                client = await self._open_any()
            except Exception as exc:
                raise self._connect_failed(exc) from None
            self._failures, self._retry_at, self.suspect = 0, 0.0, False
            self.client = client
            self.server_info = server_info_dict(client)
            return client

    def _connect_failed(self, exc: BaseException) -> McpError:
        self._failures += 1
        backoff = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + backoff
        self._last_error = describe(exc) + self.http_hint()
        closed = any(
            isinstance(e, MCPError) and e.code == CONNECTION_CLOSED for e in leaves_of(exc)
        )
        if closed and self.cfg.transport == "stdio":
            self._last_error += "; the command exited or closed its stdout before the handshake"
        if isinstance(exc, McpTimeout):
            return exc
        return McpConnectFailed(f"cannot connect to {self.cfg.label}: {self._last_error}")

    async def _open_any(self) -> Client:
        """The initialize handshake first (what nearly every server speaks); a server that
        answers it with "unsupported protocol version" gets the SDK's negotiation instead."""
        try:
            return await self._open("legacy")
        except Exception as exc:
            modern_only = any(
                isinstance(e, MCPError) and e.code == UNSUPPORTED_PROTOCOL_VERSION
                for e in leaves_of(exc)
            )
            if not modern_only:
                raise
        return await self._open("auto")

    async def _open(self, mode: str) -> Client:
        timeout = self.settings.mcp.connect_timeout_seconds
        loop = asyncio.get_running_loop()
        self.http_error = None
        ready: asyncio.Future[Client] = loop.create_future()
        stop = asyncio.Event()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, never lost
        owner = asyncio.create_task(self._own(mode, ready, stop), name=f"mcp-{self.cfg.id}")
        try:
            async with asyncio.timeout(timeout):
                client = await asyncio.shield(ready)
        except TimeoutError:
            stop.set()
            owner.cancel()  # it winds the transport down (e.g. stops a process) on its own
            background(owner)
            raise McpTimeout(
                f"{self.cfg.label} did not complete the MCP handshake within {timeout:g} s"
            ) from None
        except BaseException:
            stop.set()
            if not owner.done():
                owner.cancel()
                background(owner)
            raise
        self._owner, self._stop = owner, stop
        return client

    async def _own(self, mode: str, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        client: Client | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = Client(
                    await self._transport(stack),
                    mode=mode,
                    read_timeout_seconds=self.settings.mcp.connect_timeout_seconds,
                    message_handler=self._on_message,
                    client_info=CLIENT_INFO,
                    cache=None,
                )
                await stack.enter_async_context(client)
                if not ready.done():
                    ready.set_result(client)
                await stop.wait()
        except BaseException as exc:  # this task owns the session: it reports
            if not ready.done():
                cancelled = McpUnavailable("connecting was cancelled")
                ready.set_exception(exc if isinstance(exc, Exception) else cancelled)
            elif not stop.is_set():
                log.warning("mcp connection lost", server=self.cfg.name, error=describe(exc))
        finally:
            if client is not None and self.client is client:
                self.client = None
                self._owner = self._stop = None

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        cfg, mcp = self.cfg, self.settings.mcp
        headers = dict(cfg.headers)
        long_read = max(300.0, mcp.call_timeout_seconds + 30)
        if cfg.transport == "stdio":
            assert cfg.command
            return stdio_client(StdioServerParameters(command=cfg.command, args=list(cfg.args)))
        assert cfg.url
        if cfg.transport == "sse":
            return sse_client(
                cfg.url,
                headers=headers,
                timeout=mcp.connect_timeout_seconds,
                sse_read_timeout=long_read,
            )
        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(mcp.connect_timeout_seconds, read=long_read),
                event_hooks={"response": [self._saw_response]},
            )
        )
        return streamable_http_client(cfg.url, http_client=http)

    async def _saw_response(self, response: httpx2.Response) -> None:
        """The SDK turns an HTTP error status into a generic MCP error; remember the status so
        the message can say "HTTP 401" (a wrong token is the usual cause)."""
        if response.status_code >= 400:
            self.http_error = f"HTTP {response.status_code} from {response.request.url}"

    def http_hint(self) -> str:
        hint, self.http_error = self.http_error, None
        return f" ({hint})" if hint else ""

    async def close(self) -> None:
        owner, stop = self._owner, self._stop
        self.client, self._owner, self._stop = None, None, None
        if self._refresh is not None:
            self._refresh.cancel()
        if stop is not None:
            stop.set()
        if owner is not None and not owner.done():
            _, pending = await asyncio.wait({owner}, timeout=10)
            for task in pending:
                task.cancel()

    def broken(self, client: Client) -> None:
        """The session failed under a call: drop it so the next use reconnects."""
        if self.client is client:
            self.client = None
            if self._stop is not None:
                self._stop.set()  # the owner task leaves the SDK's contexts and ends
            if self._owner is not None:
                background(self._owner)
            self._owner = self._stop = None

    # tools -----------------------------------------------------------------------------------

    async def fetch_tools(self, client: Client) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            tools.extend(tool_entry(t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools
        return tools

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._refresh_tools())
        elif isinstance(message, Exception):
            log.debug("mcp transport error", server=self.cfg.name, error=describe(message))

    async def _refresh_tools(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            async with asyncio.timeout(self.settings.mcp.connect_timeout_seconds):
                tools = await self.fetch_tools(client)
            if self.on_tools_changed is not None:
                await self.on_tools_changed(self.cfg.id, tools)
            log.info("mcp tools refreshed", server=self.cfg.name, tools=len(tools))
        except Exception as exc:
            log.warning("mcp tools refresh failed", server=self.cfg.name, error=describe(exc))
