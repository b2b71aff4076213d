"""Presence in Redis: online while any socket of the user heartbeats, with a TTL.

`chatee:presence:{u<user>}` is a sorted set of the user's live connections (any API process),
each scored with the time its lease runs out; the owning process renews the leases every
third of `presence_ttl_seconds`. A process that dies stops renewing, so its sockets drop out
after at most one TTL — no clean-up needed. `chatee:last_seen:{u<user>}` is the last time any
of the user's sockets was alive. The hash tag keeps a user's two keys in one slot of a Redis
Cluster, so connecting and disconnecting stay one transaction there too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from chatee.redis import is_cluster
from chatee.timefmt import rfc3339_ms


def presence_key(user_id: int) -> str:
    return f"chatee:presence:{{u{user_id}}}"


def last_seen_key(user_id: int) -> str:
    return f"chatee:last_seen:{{u{user_id}}}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Presence:
    user_id: int
    online: bool
    last_seen_ms: int | None

    def to_json(self) -> dict[str, object]:
        seen = rfc3339_ms(self.last_seen_ms) if self.last_seen_ms else None
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


# KEYS: presence key, last-seen key per lease; ARGV: lease end (ms), key TTL (ms), now (ms),
# then one connection id per lease. One command for a whole chunk of leases: a process holding
# thousands of sockets renews them without parsing thousands of replies.
_RENEW = """
local lease_end, ttl, now = ARGV[1], ARGV[2], ARGV[3]
for i = 1, #KEYS / 2 do
  redis.call('ZADD', KEYS[2 * i - 1], lease_end, ARGV[3 + i])
  redis.call('PEXPIRE', KEYS[2 * i - 1], ttl)
  redis.call('SET', KEYS[2 * i], now)
end
return #KEYS / 2
"""
RENEW_CHUNK = 1000


async def renew(redis: Redis, leases: Iterable[tuple[int, str]], ttl: int) -> None:
    now = _now_ms()
    batch = list(leases)
    if is_cluster(redis):  # users' keys live in many slots: a pipeline, sent per node
        async with redis.pipeline(transaction=False) as pipe:
            for user_id, conn_id in batch:
                pipe.zadd(presence_key(user_id), {conn_id: now + ttl * 1000})
                pipe.pexpire(presence_key(user_id), ttl * 2000)
                pipe.set(last_seen_key(user_id), now)
            await pipe.execute()
        return
    script = redis.register_script(_RENEW)
    for i in range(0, len(batch), RENEW_CHUNK):
        chunk = batch[i : i + RENEW_CHUNK]
        keys = [k for user_id, _ in chunk for k in (presence_key(user_id), last_seen_key(user_id))]
        ids = [conn_id for _, conn_id in chunk]
        await script(keys=keys, args=[now + ttl * 1000, ttl * 2000, now, *ids])


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
