"""The domain errors every use case raises: one hierarchy, worded for the person on the other end.

A use case never raises an HTTP exception: it raises one of these, and each surface renders
it in its own shape in exactly one place — problem+json (`api/errors.py`), a WebSocket `error`
frame (`api/ws/frames.py`), an MCP tool error (`api/mcp_server.py`). `status` is the HTTP
status the error stands for (as Zulip's `JsonableError.http_status_code` does), `code` the
stable slug clients branch on (`/problems/<code>` over HTTP, `code` in an `error` frame).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ChateeError(Exception):
    """A refused operation. `extra` lands beside `detail` in the rendered error."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad-request"

    def __init__(self, detail: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.extra = extra


class Invalid(ChateeError):
    """The request is well-formed but says something that cannot be (a bad id, a bad name)."""

    status = 422
    default_code = "validation"


class Unauthorized(ChateeError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ChateeError):
    """The caller can see the thing but may not do this to it."""

    status = 403
    default_code = "forbidden"


class NotFound(ChateeError):
    """Missing, or not the caller's to see: the two look the same from outside."""

    status = 404
    default_code = "not-found"


class Conflict(ChateeError):
    """The thing is in a state that refuses this (closed, busy, changed meanwhile)."""

    status = 409
    default_code = "conflict"


class TooLarge(ChateeError):
    status = 413
    default_code = "too-large"


class RateLimited(ChateeError):
    status = 429
    default_code = "rate-limited"


class Unavailable(ChateeError):
    """A dependency is away; the same request is worth retrying shortly."""

    status = 503
    default_code = "unavailable"

    def __init__(self, dependency: str, detail: str | None = None, code: str | None = None):
        super().__init__(
            detail or f"{dependency} is unavailable right now; retry shortly",
            code,
            dependency=dependency,
        )
        self.dependency = dependency


def not_found(what: str) -> NotFound:
    return NotFound(f"{what} not found")
