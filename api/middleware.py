"""Per-request context: a request id on every log line and response, security headers, and one
log line per HTTP request. Pure ASGI (no BaseHTTPMiddleware), so streams are not buffered and
the bound context is the one the route runs in.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_response
from chatee.config import Settings
from chatee.logging import get_logger

log = get_logger("api.request")

REQUEST_ID = "X-Request-ID"
# a client's id is kept only if it is short and plain: it ends up in logs and headers
_SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Swagger UI / ReDoc load scripts and styles: no API CSP there
_DOCS = ("/docs", "/redoc")
# answers that carry secrets (tokens, a new API key) must not be cached anywhere
_NO_STORE = ("/api/v1/auth/", "/api/v1/api-keys")


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContext:
    """Binds `request_id` (the client's `X-Request-ID` if it is safe, else a fresh one) into
    structlog's context for the whole request or WebSocket connection, returns it as
    `X-Request-ID`, adds the security headers, and turns an unhandled crash into a 500
    problem+json that still carries both."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        knobs = settings.security
        self.common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if knobs.hsts_seconds > 0:
            value = f"max-age={knobs.hsts_seconds}; includeSubDomains"
            self.common.append((b"strict-transport-security", value.encode()))
        self.csp = knobs.content_security_policy.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        # reset afterwards: an in-process call (the /mcp tools use ASGITransport) shares the task
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
            else:
                await self._http(scope, receive, send, request_id)
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        path: str = scope["path"]
        started_at = time.perf_counter()
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if REQUEST_ID not in headers:
                    headers.append(REQUEST_ID, request_id)
                for name, value in self.common:
                    headers.raw.append((name, value))
                # the web app (api/web) sends its own, looser policy
                if not path.startswith(_DOCS) and "content-security-policy" not in headers:
                    headers.raw.append((b"content-security-policy", self.csp))
                if path.startswith(_NO_STORE) and "cache-control" not in headers:
                    headers.append("Cache-Control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error", method=scope["method"], path=path)
            if status:  # the response had begun: nothing sane left to send
                raise
            status = 500
            await problem_response(500, "internal error; it has been logged")(
                scope, receive, send_with_headers
            )
        finally:
            log.info(
                "http request",
                method=scope["method"],
                path=path,  # never the query string: it may hold a token
                status=status,
                ms=round((time.perf_counter() - started_at) * 1000, 1),
            )
