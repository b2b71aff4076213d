"""MCP client side: safety checks, a pool of long-lived sessions, and the tools agents see.

Everything goes through the official `mcp` SDK (`mcp.Client` over `streamable_http_client`,
`sse_client` or `stdio_client`); nothing here speaks JSON-RPC by hand.

`McpManager` keeps one session per registered server (keyed by server id + a hash of its
config, so an edited server gets a fresh session). Each session is owned by a background task
that enters and leaves the SDK's anyio context managers itself; callers borrow the connected
`Client`. Calls are bounded three ways: the connect timeout (handshake), the call timeout
(`tools/call`) and a semaphore per server. A failed connect backs off exponentially; a session
that dies (server killed, stream cut) is dropped and the next use reconnects; a session that
timed out is probed before it is trusted again. The server's `notifications/tools/list_changed`
refreshes the tools cache (and, through `on_tools_changed`, the database row).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, UNSUPPORTED_PROTOCOL_VERSION
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.config import Settings
from chatee.logging import get_logger, register_secret
from chatee.models import Agent, McpServer, utcnow

log = get_logger(__name__)

TRANSPORTS = ("streamable_http", "sse", "stdio")
CLIENT_INFO = types.Implementation(name="chatee", version="0.1.0")
INLINE_BINARY_CHARS = 4096  # base64 data up to this size stays in a result; larger is referenced
MAX_TEXT_CHARS = 1_000_000  # one text block of a result, whatever the caller does with it
IDLE_SECONDS = 600.0  # a pooled session unused this long is closed
MAX_BACKOFF_SECONDS = 30.0
# what the SDK's streamable HTTP client reports for an HTTP error status without a JSON-RPC body
HTTP_STAND_INS = frozenset({"Not Found", "Session terminated", "Server returned an error response"})


# -- errors ----------------------------------------------------------------------------------


class McpError(Exception):
    """An MCP failure, worded for the person or model that reads it."""

    status = 502


class McpInvalid(McpError):
    """The server's configuration cannot work (bad URL, unknown transport…)."""

    status = 422


class McpRefused(McpError):
    """A safety rule forbids this server (stdio allow-list, URL deny-list)."""

    status = 403


class McpUnavailable(McpError):
    """The server cannot be reached, or the connection broke."""

    status = 502


class McpConnectFailed(McpUnavailable):
    """No session could be opened: the request never reached the server (safe to retry)."""


class McpTimeout(McpError):
    status = 504


class McpServerError(McpError):
    """The server answered with a JSON-RPC error (unknown tool, invalid params…)."""

    status = 502


# -- configuration and safety ------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    id: int
    name: str
    transport: str
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_row(cls, row: McpServer) -> ServerConfig:
        headers = tuple(sorted((str(k), str(v)) for k, v in (row.headers or {}).items()))
        for _, value in headers:
            register_secret(value)
        return cls(
            id=row.id,
            name=row.name,
            transport=row.transport,
            url=row.url,
            command=row.command,
            args=tuple(str(a) for a in row.args or ()),
            headers=headers,
        )

    @property
    def key(self) -> str:
        """Identifies the configuration: a changed server gets a new session."""
        raw = json.dumps(
            [self.transport, self.url, self.command, self.args, self.headers], sort_keys=True
        )
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"MCP server {self.name!r}"


def check_stdio_command(command: str, settings: Settings) -> None:
    """A stdio server may only run a command on `mcp.stdio_allowlist`: listed by name
    (`node`, found on PATH) or by full path. A full path is also allowed when it is where a
    listed name resolves to."""
    allowed = settings.mcp.stdio_allowlist
    if command in allowed:
        return
    if os.sep in command:
        real = os.path.realpath(command)
        for entry in allowed:
            target = entry if os.sep in entry else shutil.which(entry)
            if target and os.path.realpath(target) == real:
                return
    listed = ", ".join(allowed) or "nothing"
    raise McpRefused(
        f"the stdio command {command!r} is not allowed: mcp.stdio_allowlist "
        f"(CHATEE_MCP__STDIO_ALLOWLIST) allows {listed}"
    )


def denied_network(
    address: str, settings: Settings
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The `mcp.url_denylist` network `address` falls in, or None when it may be used.
    Loopback addresses pass when `mcp.allow_loopback` is on."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and settings.mcp.allow_loopback:
        return None
    for entry in settings.mcp.url_denylist:
        network = ipaddress.ip_network(entry, strict=False)
        if ip.version == network.version and ip in network:
            return network
    return None


def _split_url(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise McpInvalid(f"url: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise McpInvalid("url: only http:// and https:// URLs are supported")
    if not parts.hostname:
        raise McpInvalid("url: the URL names no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, settings: Settings) -> None:
    """Resolve the URL's host; refuse it if any address is in `mcp.url_denylist` (loopback
    excepted when `mcp.allow_loopback`). Checked at registration and again at every connect."""
    host, port = _split_url(url)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(settings.mcp.connect_timeout_seconds):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise McpInvalid(f"url: the host {host!r} does not resolve ({exc})") from None
    for info in infos:
        address = str(info[4][0])
        network = denied_network(address, settings)
        if network is not None:
            hint = (
                "; loopback is allowed only with mcp.allow_loopback (CHATEE_MCP__ALLOW_LOOPBACK)"
                if ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
                else ""
            )
            raise McpRefused(
                f"the URL's host {host!r} resolves to {address}, which is in the denied "
                f"network {network} (mcp.url_denylist){hint}"
            )


async def check_server(cfg: ServerConfig, settings: Settings) -> None:
    """Every safety and sanity rule a server must pass before Chatee talks to it."""
    if cfg.transport not in TRANSPORTS:
        raise McpInvalid(f"transport: must be one of {', '.join(TRANSPORTS)}")
    if cfg.transport == "stdio":
        if not cfg.command:
            raise McpInvalid("command: a stdio server needs a command")
        check_stdio_command(cfg.command, settings)
    else:
        if not cfg.url:
            raise McpInvalid(f"url: a {cfg.transport} server needs a url")
        await check_url(cfg.url, settings)


# -- results ---------------------------------------------------------------------------------


def tool_entry(tool: types.Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description or tool.title or "",
        "input_schema": tool.input_schema,
    }


def server_info_dict(client: Client) -> dict[str, Any]:
    info = client.server_info
    out: dict[str, Any] = {"protocol_version": client.protocol_version}
    if info is not None:
        out.update(name=info.name, version=info.version)
        if info.title:
            out["title"] = info.title
    if client.instructions:
        out["instructions"] = client.instructions[:2000]
    return out


def _binary(kind: str, data: str, mime_type: str | None, **extra: Any) -> dict[str, Any]:
    """Small base64 payloads stay inline; larger ones become a reference (size + digest)."""
    block: dict[str, Any] = {"type": kind, "mime_type": mime_type, **extra}
    try:
        raw = base64.b64decode(data, validate=False)
    except ValueError:
        raw = data.encode()
    block["bytes"] = len(raw)
    if len(data) <= INLINE_BINARY_CHARS:
        block["data"] = data
    else:
        block["sha256"] = hashlib.sha256(raw).hexdigest()
        block["data_omitted"] = True
    return block


def content_block(block: types.ContentBlock) -> dict[str, Any]:
    """A result content block as plain JSON, with large binaries turned into references."""
    if isinstance(block, types.TextContent):
        text = block.text
        if len(text) > MAX_TEXT_CHARS:
            return {"type": "text", "text": text[:MAX_TEXT_CHARS], "truncated": True}
        return {"type": "text", "text": text}
    if isinstance(block, types.ImageContent | types.AudioContent):
        return _binary(block.type, block.data, block.mime_type)
    if isinstance(block, types.ResourceLink):
        out = {"type": "resource_link", "uri": str(block.uri), "name": block.name}
        if block.mime_type:
            out["mime_type"] = block.mime_type
        if block.description:
            out["description"] = block.description
        return out
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            out = {"type": "resource", "uri": str(res.uri), "mime_type": res.mime_type}
            out["text"] = res.text[:MAX_TEXT_CHARS]
            return out
        return _binary("resource", res.blob, res.mime_type, uri=str(res.uri))
    return {"type": getattr(block, "type", "unknown")}


def result_dict(result: types.CallToolResult) -> dict[str, Any]:
    return {
        "content": [content_block(b) for b in result.content],
        "structured_content": result.structured_content,
        "is_error": bool(result.is_error),
    }


def error_result(message: str) -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": message}],
        "structured_content": None,
        "is_error": True,
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def describe(exc: BaseException) -> str:
    """One readable line for whatever an SDK transport raised (exception groups included)."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    err = leaves[0]
    if isinstance(err, McpError):
        return str(err)
    if isinstance(err, MCPError):
        return f"{err.message} (MCP error {err.code})"
    if isinstance(err, httpx2.HTTPStatusError):
        return f"HTTP {err.response.status_code} from {err.request.url}"
    if isinstance(err, httpx2.ConnectError):
        return f"cannot connect ({err})"
    if isinstance(err, httpx2.TimeoutException):
        return f"the HTTP request timed out ({type(err).__name__})"
    if isinstance(err, FileNotFoundError):
        return f"cannot start the command: {err.strerror or err} ({err.filename})"
    if isinstance(err, OSError):
        return f"{type(err).__name__}: {err.strerror or err}"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# -- pooled sessions ---------------------------------------------------------------------------

_tasks: set[asyncio.Task[Any]] = set()


def _background(task: asyncio.Task[Any]) -> None:
    """Keep a clean-up task alive until it ends (the loop only holds weak references)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


ToolsChanged = Callable[[int, list[dict[str, Any]]], Awaitable[None]]


@dataclass
class Connected:
    server_info: dict[str, Any]
    tools: list[dict[str, Any]]


class _Connection:
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
        closed = any(isinstance(e, MCPError) and e.code == CONNECTION_CLOSED for e in _leaves(exc))
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
                for e in _leaves(exc)
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
            _background(owner)
            raise McpTimeout(
                f"{self.cfg.label} did not complete the MCP handshake within {timeout:g} s"
            ) from None
        except BaseException:
            stop.set()
            if not owner.done():
                owner.cancel()
                _background(owner)
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
                _background(self._owner)
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


class McpManager:
    """Pooled MCP sessions for one process (the API has one, every worker has one)."""

    def __init__(self, settings: Settings, on_tools_changed: ToolsChanged | None = None) -> None:
        self.settings = settings
        self.on_tools_changed = on_tools_changed
        self._conns: dict[int, _Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def _get(self, cfg: ServerConfig) -> _Connection:
        now = time.monotonic()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle())
        conn = self._conns.get(cfg.id)
        if conn is not None and conn.cfg.key != cfg.key:  # the server was edited
            self._retire(self._conns.pop(cfg.id))
            conn = None
        if conn is None:
            conn = self._conns[cfg.id] = _Connection(cfg, self.settings, self.on_tools_changed)
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

    def _retire(self, conn: _Connection) -> None:
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
        pending = self._closing | _tasks
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

    def _failure(self, conn: _Connection, client: Client, exc: BaseException, doing: str) -> Any:
        """Map what the SDK raised to an McpError, and decide what it means for the session.
        Cancellation passes through untouched."""
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            return exc
        label = conn.cfg.label
        leaf = next((e for e in _leaves(exc) if not isinstance(e, asyncio.CancelledError)), exc)
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


# -- persistence -----------------------------------------------------------------------------


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


# -- what agents see -------------------------------------------------------------------------


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
