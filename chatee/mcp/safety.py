"""The rules a server must pass before Chatee talks to it: a stdio command must be on the
allow-list, a URL must not resolve into a denied network (loopback only when allowed)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
from urllib.parse import urlsplit

from chatee.config import Settings
from chatee.mcp.config import TRANSPORTS, ServerConfig
from chatee.mcp.errors import McpInvalid, McpRefused


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
