"""The sliding-window rate limiter: one Redis sorted set per budget and caller.

Each budget is a sorted set of request timestamps (`chatee:rl:<budget>:<who>`). One Lua script
drops the entries older than the window, counts the rest and, if there is room, records this
request — atomic, so processes sharing Redis share the budget, and timed by Redis's clock, so
their clocks need not agree. A refused request is not recorded, so the window recovers by
itself; the answer says when the oldest counted request leaves it.
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from typing import Any

from chatee.config import Settings
from chatee.logging import get_logger
from chatee.redis import REDIS_ERRORS

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
        except REDIS_ERRORS as exc:
            log.warning("rate limiter unavailable; request let through", error=str(exc))
            return None
        return None if allowed else max(1, math.ceil(int(retry_ms) / 1000))

    def exempt_ip(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)
