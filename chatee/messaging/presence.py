"""Presence in Redis: online while any socket of the user heartbeats, with a TTL.

`chatee:presence:<user>` is a sorted set of the user's live connections (any API process),
each scored with the time its lease runs out; the owning process renews the leases every
third of `presence_ttl_seconds`. A process that dies stops renewing, so its sockets drop out
after at most one TTL — no clean-up needed. `chatee:last_seen:<user>` is the last time any of
the user's sockets was alive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis


def presence_key(user_id: int) -> str:
    return f"chatee:presence:{user_id}"


def last_seen_key(user_id: int) -> str:
    return f"chatee:last_seen:{user_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Presence:
    user_id: int
    online: bool
    last_seen_ms: int | None

    def to_json(self) -> dict[str, object]:
        seen = (
            datetime.fromtimestamp(self.last_seen_ms / 1000, UTC).isoformat()
            if self.last_seen_ms
            else None
        )
        return {
            "user_id": str(self.user_id),
            "status": "online" if self.online else "offline",
            "last_seen": seen,
        }


async def connect(redis: Redis, user_id: int, conn_id: str, ttl: int) -> bool:
    """Lease a connection; True if the user was offline until now."""
    now = _now_ms()
    key = presence_key(user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        pipe.zadd(key, {conn_id: now + ttl * 1000})
        pipe.pexpire(key, ttl * 2000)
        pipe.set(last_seen_key(user_id), now)
        _, before, *_ = await pipe.execute()
    return before == 0


async def renew(redis: Redis, leases: Iterable[tuple[int, str]], ttl: int) -> None:
    now = _now_ms()
    async with redis.pipeline(transaction=False) as pipe:
        for user_id, conn_id in leases:
            pipe.zadd(presence_key(user_id), {conn_id: now + ttl * 1000})
            pipe.pexpire(presence_key(user_id), ttl * 2000)
            pipe.set(last_seen_key(user_id), now)
        await pipe.execute()


async def disconnect(redis: Redis, user_id: int, conn_id: str) -> bool:
    """End a lease; True if that was the user's last live connection."""
    now = _now_ms()
    key = presence_key(user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(key, conn_id)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zcard(key)
        pipe.set(last_seen_key(user_id), now)
        _, _, left, _ = await pipe.execute()
    return left == 0


async def status(redis: Redis, user_ids: Sequence[int]) -> list[Presence]:
    now = _now_ms()
    async with redis.pipeline(transaction=False) as pipe:
        for user_id in user_ids:
            pipe.zcount(presence_key(user_id), now, "+inf")
            pipe.get(last_seen_key(user_id))
        replies = await pipe.execute()
    counts, seen = replies[0::2], replies[1::2]
    return [
        Presence(user_id, bool(count), int(last) if last else None)
        for user_id, count, last in zip(user_ids, counts, seen, strict=True)
    ]
