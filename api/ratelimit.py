"""Rate limits per client IP and per user, answered with 429 (the window: chatee/ratelimit.py).

If Redis cannot be reached the request goes through (logged): a limiter outage should not take
the API down with it.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_response
from chatee.config import Settings
from chatee.ratelimit import Limiter


def limiter(app: Any) -> Limiter | None:
    """This app's limiter (None until its services exist: the lifespan builds them)."""
    services = getattr(app.state, "services", None)
    return services.limiter if services is not None else None


def too_many(retry_after: int, what: str) -> HTTPException:
    return HTTPException(
        429, f"too many {what}; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
    )


async def limit_user_writes(app: Any, svc: Any, user_id: int) -> None:
    """The per-user budget for writes (POST/PUT/PATCH/DELETE); raises 429 when spent."""
    made = limiter(app)
    if made is None:
        return
    retry = await made.hit(
        "user-writes", str(user_id), svc.settings.security.user_writes_per_window
    )
    if retry is not None:
        raise too_many(retry, "writes from this user")


LIMITED = ("/api/v1/", "/mcp", "/v1/", "/a2a/")


class RateLimitByIp:
    """Per client IP: a budget for every request to the API's surfaces (`/api/v1`, `/mcp`, the
    OpenAI-compatible `/v1`, `/a2a`), and a stricter one for
    `/api/v1/auth/*` (password guessing, mass registration). The client IP is uvicorn's, which
    honours `X-Forwarded-For` from trusted proxies (`--forwarded-allow-ips`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.knobs = settings.security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.knobs.rate_limits_enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        made = limiter(scope["app"]) if path.startswith(LIMITED) else None
        client = scope.get("client")
        if made is not None and client and not made.exempt_ip(client[0]):
            ip = client[0]
            retry = await made.hit("ip", ip, self.knobs.ip_requests_per_window)
            if retry is None and path.startswith("/api/v1/auth/"):
                retry = await made.hit("auth-ip", ip, self.knobs.auth_requests_per_window)
            if retry is not None:
                detail = f"too many requests from this address; retry in {retry} s"
                headers = {"Retry-After": str(retry)}
                response = problem_response(429, detail, headers=headers)
                if path.startswith("/v1/"):  # the OpenAI-compatible API's own error shape
                    # (imported here: api.openai's routers import this module through api.deps)
                    from api.openai.errors import error_response

                    response = error_response(429, detail, headers=headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
