"""Redis cache of hot reads: conversation memberships and agent configs.

Every send checks membership and every fan-out needs the member list, so they are read from
Redis and only on a miss from SQL. Writers invalidate: membership changes delete their key
right after the commit (all in `chatee.messaging.conversations`); agent rows are watched with
SQLAlchemy session events, so any code path that updates or deletes an agent (the agents
router included) drops its cached config once the transaction commits. A TTL is the safety
net for an invalidation lost to a crash between commit and delete. Redis being down only
costs speed: every read falls back to SQL.

API processes also keep a *near* copy of what they read (`Cache.listen`), for a few seconds:
a send then needs no round trip to learn who is in its conversation. Every invalidation is
published on `chatee:cache:invalidate` along with the delete, and each listening process
drops those keys as soon as it hears it. A read that was in flight when an invalidation
arrived is not kept. The near copy is used only while the subscription is confirmed: when it
fails (or redis-py reconnects it), the copy is emptied and reads go to Redis until Redis
confirms the subscription again. An invalidation can only be missed in the moment before a
broken subscription is noticed, and then for at most `messaging.near_cache_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from chatee.coalesce import Coalescer
from chatee.logging import get_logger
from chatee.models import Agent, User
from chatee.redis import REDIS_ERRORS, Subscriptions, get_many, is_cluster, publish

log = get_logger(__name__)


def conversation_key(conversation_id: int) -> str:
    return f"chatee:cache:conversation:{conversation_id}"


def members_key(audience_id: int) -> str:
    return f"chatee:cache:members:{audience_id}"


def agent_key(agent_id: int) -> str:
    return f"chatee:cache:agent:{agent_id}"


def name_key(kind: str, member_id: int) -> str:
    """What a user or an agent is called (`chatee.messaging.names`)."""
    return f"chatee:cache:name:{kind}:{member_id}"


INVALIDATIONS = "chatee:cache:invalidate"  # keys just deleted, newline-separated


class Cache:
    def __init__(self, redis: Redis, ttl_seconds: int, near_seconds: float = 0) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        # every send reads its conversation: concurrent reads share one MGET
        self._reads: Coalescer[tuple[str, ...], list[Any | None]] = Coalescer(self._read_batch)
        self.near_seconds = near_seconds
        self._near: dict[str, tuple[float, Any]] = {}  # key -> (expires, value)
        self.near_on = False  # only while the invalidation channel is heard
        self._epoch = 0  # bumped by every invalidation: reads in flight then are not kept
        self._listener: asyncio.Task[None] | None = None
        self._swept = time.monotonic()

    async def get(self, key: str) -> Any | None:
        return (await self.get_many(key))[0]

    async def get_many(self, *keys: str) -> list[Any | None]:
        """Several keys in one round trip (MGET, shared with concurrent callers); None for
        each miss. Values are shared: callers must not change them."""
        if not self.near_on:
            return await self._reads(keys)
        now = time.monotonic()
        near = [self._near.get(key) for key in keys]
        if all(entry is not None and entry[0] > now for entry in near):
            return [entry[1] for entry in near]  # type: ignore[index]
        epoch = self._epoch
        values = await self._reads(keys)
        if now - self._swept > self.near_seconds:  # drop what expired unread now and then
            self._swept = now
            self._near = {key: entry for key, entry in self._near.items() if entry[0] > now}
        if self.near_on and epoch == self._epoch:
            expires = now + self.near_seconds
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    self._near[key] = (expires, value)
        return values

    async def _read_batch(
        self, calls: list[tuple[str, ...]]
    ) -> list[tuple[list[Any | None], None]]:
        wanted = list({key: None for keys in calls for key in keys})
        try:
            raws = dict(zip(wanted, await get_many(self.redis, wanted), strict=True))
        except REDIS_ERRORS:
            raws = {}
        values = {key: json.loads(raw) for key, raw in raws.items() if raw}
        return [([values.get(key) for key in keys], None) for keys in calls]

    async def set(self, key: str, value: Any) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.set(key, json.dumps(value, separators=(",", ":")), ex=self.ttl)

    async def delete(self, *keys: str) -> None:
        """Drop keys everywhere: Redis, this process's near copy, and (through the
        invalidation channel) every other process's."""
        self._forget(keys)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:  # one by one: on a cluster the keys live in different slots
                    pipe.delete(key)
                publish(pipe, INVALIDATIONS, "\n".join(keys), sharded=is_cluster(self.redis))
                await pipe.execute()
        except REDIS_ERRORS:
            log.warning("cache invalidation failed; entries expire by TTL", keys=list(keys))

    # -- the near copy ----------------------------------------------------------------------

    def listen(self) -> None:
        """Keep a near copy in this process (API processes do; see the module docstring)."""
        if self.near_seconds > 0 and self._listener is None:
            invalidations = Subscriptions(
                self.redis, self._invalidated, self._heard, self._off, channels=[INVALIDATIONS]
            )
            self._listener = asyncio.create_task(invalidations.run(), name="cache-invalidations")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        self._off()

    def _forget(self, keys: Iterable[str]) -> None:
        self._epoch += 1
        for key in keys:
            self._near.pop(key, None)

    def _invalidated(self, data: str) -> None:
        self._forget(data.split("\n"))

    def _heard(self) -> None:
        self.near_on = True  # subscribed: from here on no invalidation is missed

    def _off(self) -> None:
        self.near_on = False
        self._epoch += 1
        self._near.clear()


_watching: set[int] = set()
_pending: set[asyncio.Task[Any]] = set()


def watch_agent_writes(cache: Cache) -> None:
    """Drop an agent's cached config and name, and a user's name, whenever a transaction that
    changed them commits."""
    if id(cache) in _watching:
        return
    _watching.add(id(cache))

    @event.listens_for(OrmSession, "after_flush")
    def _collect(session: OrmSession, _: Any) -> None:
        touched = (*session.dirty, *session.deleted)
        changed = {agent_key(o.id) for o in touched if isinstance(o, Agent)}
        changed |= {name_key("agent", o.id) for o in touched if isinstance(o, Agent)}
        changed |= {name_key("user", o.id) for o in touched if isinstance(o, User)}
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
        task = loop.create_task(cache.delete(*changed))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    @event.listens_for(OrmSession, "after_rollback")
    def _forget(session: OrmSession) -> None:
        session.info.pop("chatee_agents_changed", None)
