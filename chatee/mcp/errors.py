"""MCP failures as domain errors, and one readable line for whatever the SDK raised.

Each is a `ChateeError`, so every surface renders it as it renders any refusal: over HTTP a bad
configuration is a 422 (`/problems/validation`), a safety rule a 403 (`/problems/mcp-refused`),
a server that did not answer in time a 504 (`/problems/mcp-timeout`), anything else from the far
side a 502 (`/problems/mcp-error`).
"""

from __future__ import annotations

import asyncio

import httpx2
from mcp.shared.exceptions import MCPError

from chatee.errors import ChateeError, Forbidden, Invalid


class McpError(ChateeError):
    """An MCP failure, worded for the person or model that reads it."""

    status = 502
    default_code = "mcp-error"


class McpInvalid(McpError, Invalid):
    """The server's configuration cannot work (bad URL, unknown transport…)."""

    status = 422
    default_code = "validation"


class McpRefused(McpError, Forbidden):
    """A safety rule forbids this server (stdio allow-list, URL deny-list)."""

    status = 403
    default_code = "mcp-refused"


class McpUnavailable(McpError):
    """The server cannot be reached, or the connection broke."""

    status = 502


class McpConnectFailed(McpUnavailable):
    """No session could be opened: the request never reached the server (safe to retry)."""


class McpTimeout(McpError):
    status = 504
    default_code = "mcp-timeout"


class McpServerError(McpError):
    """The server answered with a JSON-RPC error (unknown tool, invalid params…)."""

    status = 502


def leaves_of(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves_of(sub)]
    return [exc]


def describe(exc: BaseException) -> str:
    """One readable line for whatever an SDK transport raised (exception groups included)."""
    leaves = [e for e in leaves_of(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
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
