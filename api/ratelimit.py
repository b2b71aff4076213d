"""Rate limits: a Redis sliding window per client IP and per user, answered with 429.

Each budget is a sorted set of request timestamps (`chatee:rl:<budget>:<who>`). One Lua script
drops the entries older than the window, counts the rest and, if there is room, records this
request — atomic, so API processes sharing Redis share the budget, and timed by Redis's clock,
so their clocks need not agree. A refused request is not recorded, so the window recovers by
itself; `Retry-After` says when the oldest counted request leaves it.

If Redis cannot be reached the request goes through (logged): a limiter outage should not take
the API down with it.
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_response
from chatee.config import Settings
from chatee.logging import get_logger

log = get_logger(__name__)

# KEYS[1]: the window's sorted set; ARGV: window ms, limit, unique member. → {allowed, retry ms}
SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""


class Limiter:
    """The sliding-window script bound to one Redis client."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.script = redis.register_script(SLIDING_WINDOW)
        self.knobs = settings.security
        self.window_ms = self.knobs.rate_window_seconds * 1000
        self.exempt = [
            ipaddress.ip_network(n, strict=False) for n in self.knobs.rate_limit_exempt_ips
        ]

    async def hit(self, budget: str, who: str, limit: int) -> int | None:
        """Count one request; None if it fits, else the seconds until it would."""
        if limit <= 0 or not self.knobs.rate_limits_enabled:
            return None
        try:
            allowed, retry_ms = await self.script(
                keys=[f"chatee:rl:{budget}:{who}"], args=[self.window_ms, limit, uuid.uuid4().hex]
            )
        except RedisError as exc:
            log.warning("rate limiter unavailable; request let through", error=str(exc))
            return None
        return None if allowed else max(1, math.ceil(int(retry_ms) / 1000))

    def exempt_ip(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)


def limiter(app: Any) -> Limiter | None:
    """This app's limiter, made on first use (the Redis client exists once the app started)."""
    state = app.state
    made = getattr(state, "rate_limiter", None)
    if made is None:
        res = getattr(state, "resources", None)
        if res is None:
            return None
        made = state.rate_limiter = Limiter(res.redis, res.settings)
    return made


def too_many(retry_after: int, what: str) -> HTTPException:
    return HTTPException(
        429, f"too many {what}; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
    )


async def limit_user_writes(app: Any, res: Any, user_id: int) -> None:
    """The per-user budget for writes (POST/PUT/PATCH/DELETE); raises 429 when spent."""
    made = limiter(app)
    if made is None:
        return
    retry = await made.hit(
        "user-writes", str(user_id), res.settings.security.user_writes_per_window
    )
    if retry is not None:
        raise too_many(retry, "writes from this user")


class RateLimitByIp:
    """Per client IP: a budget for every `/api/v1` and `/mcp` request, and a stricter one for
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
        made = limiter(scope["app"]) if path.startswith(("/api/v1/", "/mcp")) else None
        client = scope.get("client")
        if made is not None and client and not made.exempt_ip(client[0]):
            ip = client[0]
            retry = await made.hit("ip", ip, self.knobs.ip_requests_per_window)
            if retry is None and path.startswith("/api/v1/auth/"):
                retry = await made.hit("auth-ip", ip, self.knobs.auth_requests_per_window)
            if retry is not None:
                response = problem_response(
                    429,
                    f"too many requests from this address; retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
