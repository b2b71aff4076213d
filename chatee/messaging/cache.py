"""Redis cache of hot reads: conversation memberships and agent configs.

Every send checks membership and every fan-out needs the member list, so they are read from
Redis and only on a miss from SQL. Writers invalidate: membership changes delete their key
right after the commit (all in `chatee.messaging.conversations`); agent rows are watched with
SQLAlchemy session events, so any code path that updates or deletes an agent (the agents
router included) drops its cached config once the transaction commits. A TTL is the safety
net for an invalidation lost to a crash between commit and delete. Redis being down only
costs speed: every read falls back to SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from chatee.coalesce import Coalescer
from chatee.logging import get_logger
from chatee.models import Agent

log = get_logger(__name__)


def conversation_key(conversation_id: int) -> str:
    return f"chatee:cache:conversation:{conversation_id}"


def members_key(audience_id: int) -> str:
    return f"chatee:cache:members:{audience_id}"


def agent_key(agent_id: int) -> str:
    return f"chatee:cache:agent:{agent_id}"


class Cache:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        # every send reads its conversation: concurrent reads share one MGET
        self._reads: Coalescer[tuple[str, ...], list[Any | None]] = Coalescer(self._read_batch)

    async def get(self, key: str) -> Any | None:
        try:
            raw = await self.redis.get(key)
        except RedisError:
            return None
        return json.loads(raw) if raw else None

    async def get_many(self, *keys: str) -> list[Any | None]:
        """Several keys in one round trip (MGET, shared with concurrent callers); None for
        each miss."""
        return await self._reads(keys)

    async def _read_batch(
        self, calls: list[tuple[str, ...]]
    ) -> list[tuple[list[Any | None], None]]:
        wanted = list({key: None for keys in calls for key in keys})
        try:
            raws = dict(zip(wanted, await self.redis.mget(wanted), strict=True))
        except RedisError:
            raws = {}
        values = {key: json.loads(raw) for key, raw in raws.items() if raw}
        return [([values.get(key) for key in keys], None) for keys in calls]

    async def set(self, key: str, value: Any) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.set(key, json.dumps(value, separators=(",", ":")), ex=self.ttl)

    async def delete(self, *keys: str) -> None:
        try:
            await self.redis.delete(*keys)
        except RedisError:
            log.warning("cache invalidation failed; entries expire by TTL", keys=list(keys))


_watching: set[int] = set()
_pending: set[asyncio.Task[Any]] = set()


def watch_agent_writes(cache: Cache) -> None:
    """Drop an agent's cached config whenever a transaction that changed it commits."""
    if id(cache) in _watching:
        return
    _watching.add(id(cache))

    @event.listens_for(OrmSession, "after_flush")
    def _collect(session: OrmSession, _: Any) -> None:
        changed = {o.id for o in (*session.dirty, *session.deleted) if isinstance(o, Agent)}
        if changed:
            session.info.setdefault("chatee_agents_changed", set()).update(changed)

    @event.listens_for(OrmSession, "after_commit")
    def _invalidate(session: OrmSession) -> None:
        changed = session.info.pop("chatee_agents_changed", None)
        if not changed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(cache.delete(*(agent_key(a) for a in changed)))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    @event.listens_for(OrmSession, "after_rollback")
    def _forget(session: OrmSession) -> None:
        session.info.pop("chatee_agents_changed", None)
