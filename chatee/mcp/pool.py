"""`McpManager`: the pooled MCP sessions of one process (one per server, reaped when idle), and
what a failure under a call means for its session (timed out: probe it; broken: drop it)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from chatee.config import Settings
from chatee.mcp.config import ServerConfig
from chatee.mcp.connection import Connection, ToolsChanged, cleanups
from chatee.mcp.errors import McpServerError, McpTimeout, McpUnavailable, describe, leaves_of
from chatee.mcp.results import result_dict

IDLE_SECONDS = 600.0  # a pooled session unused this long is closed
# what the SDK's streamable HTTP client reports for an HTTP error status without a JSON-RPC body
HTTP_STAND_INS = frozenset({"Not Found", "Session terminated", "Server returned an error response"})


@dataclass
class Connected:
    server_info: dict[str, Any]
    tools: list[dict[str, Any]]


class McpManager:
    """Pooled MCP sessions for one process (the API has one, every worker has one)."""

    def __init__(self, settings: Settings, on_tools_changed: ToolsChanged | None = None) -> None:
        self.settings = settings
        self.on_tools_changed = on_tools_changed
        self._conns: dict[int, Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def _get(self, cfg: ServerConfig) -> Connection:
        now = time.monotonic()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle())
        conn = self._conns.get(cfg.id)
        if conn is not None and conn.cfg.key != cfg.key:  # the server was edited
            self._retire(self._conns.pop(cfg.id))
            conn = None
        if conn is None:
            conn = self._conns[cfg.id] = Connection(cfg, self.settings, self.on_tools_changed)
        conn.cfg = cfg  # the name may have changed without the key changing
        conn.last_used = now
        return conn

    async def _reap_idle(self) -> None:
        """Close sessions nobody used for IDLE_SECONDS (a stdio server is a process)."""
        while True:
            await asyncio.sleep(min(60.0, IDLE_SECONDS / 4))
            now = time.monotonic()
            for sid, conn in list(self._conns.items()):
                if conn.in_flight == 0 and now - conn.last_used > IDLE_SECONDS:
                    self._retire(self._conns.pop(sid))

    def _retire(self, conn: Connection) -> None:
        task = asyncio.create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def forget(self, server_id: int) -> None:
        """Close the pooled session of a deleted or edited server."""
        conn = self._conns.pop(server_id, None)
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        pending = self._closing | cleanups
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def connect(self, cfg: ServerConfig) -> Connected:
        """Open (or reuse) the session and fetch the server's tools afresh."""
        conn = self._get(cfg)
        client = await conn.session()
        try:
            async with asyncio.timeout(self.settings.mcp.connect_timeout_seconds + 1):
                tools = await conn.fetch_tools(client)
        except BaseException as exc:
            raise self._failure(conn, client, exc, "listing tools") from None
        return Connected(dict(conn.server_info), tools)

    async def list_tools(self, cfg: ServerConfig) -> list[dict[str, Any]]:
        conn = self._get(cfg)
        if conn.tools is not None and conn.client is not None:
            return list(conn.tools)
        return (await self.connect(cfg)).tools

    async def call_tool(
        self, cfg: ServerConfig, name: str, arguments: dict[str, Any] | None
    ) -> dict[str, Any]:
        """`{content, structured_content, is_error}`; a tool's own failure is a result with
        `is_error`, anything else raises an `McpError` subclass."""
        conn = self._get(cfg)
        timeout = self.settings.mcp.call_timeout_seconds
        conn.in_flight += 1
        try:
            client = await conn.session()
            try:
                async with asyncio.timeout(timeout):
                    await conn.slots.acquire()
            except TimeoutError:
                raise McpTimeout(
                    f"{cfg.label} is busy: no call slot freed within {timeout:g} s "
                    f"(mcp.max_concurrency_per_server)"
                ) from None
            try:
                async with asyncio.timeout(timeout + 2):  # the SDK's own timeout fires first
                    result = await client.call_tool(name, arguments, read_timeout_seconds=timeout)
            except BaseException as exc:
                raise self._failure(conn, client, exc, f"calling the tool {name!r}") from None
            finally:
                conn.slots.release()
            return result_dict(result)
        finally:
            conn.in_flight -= 1
            conn.last_used = time.monotonic()

    def _failure(self, conn: Connection, client: Client, exc: BaseException, doing: str) -> Any:
        """Map what the SDK raised to an McpError, and decide what it means for the session.
        Cancellation passes through untouched."""
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            return exc
        label = conn.cfg.label
        leaf = next((e for e in leaves_of(exc) if not isinstance(e, asyncio.CancelledError)), exc)
        timeout = self.settings.mcp.call_timeout_seconds
        if isinstance(leaf, TimeoutError) or (
            isinstance(leaf, MCPError) and leaf.code == REQUEST_TIMEOUT
        ):
            conn.suspect = True
            return McpTimeout(f"{label} did not answer within {timeout:g} s while {doing}")
        hint = conn.http_hint()
        # the SDK's stand-ins for an HTTP error status mean the session is gone
        session_gone = bool(hint) and isinstance(leaf, MCPError) and leaf.message in HTTP_STAND_INS
        if isinstance(leaf, MCPError) and leaf.code != CONNECTION_CLOSED and not session_gone:
            return McpServerError(
                f"{label} returned an error while {doing}: {describe(leaf)}{hint}"
            )
        conn.broken(client)
        return McpUnavailable(
            f"the connection to {label} broke while {doing}: {describe(exc)}{hint}"
        )
