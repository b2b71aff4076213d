"""Each process leases its own snowflake node id from Redis, so replicas sharing one
configuration never mint the same id. `CHATEE_NODE_ID`, when set, is used as is.

Node 0 is never leased: it is what a process that mints ids without a lease uses (scripts,
tests), so those cannot collide with a running API or worker either."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket

from redis.asyncio import Redis

from chatee import ids
from chatee.logging import get_logger
from chatee.redis import REDIS_ERRORS

log = get_logger(__name__)
TTL_SECONDS = 60
RENEW_SECONDS = 20


class NodeLease:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.node_id: int | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> int:
        """Lease a free node id (1–1023) and configure `chatee.ids` with it."""
        candidates = list(range(1, ids.MAX_NODE + 1))
        random.shuffle(candidates)
        try:
            for node in candidates:
                if await self.redis.set(_key(node), self._owner, nx=True, ex=TTL_SECONDS):
                    self.node_id = node
                    break
        except REDIS_ERRORS as exc:
            log.warning("could not lease a node id; using a random one", error=type(exc).__name__)
        if self.node_id is None:
            self.node_id = random.randint(1, ids.MAX_NODE)
        ids.configure(self.node_id)
        self._renewer = asyncio.create_task(self._renew())
        return self.node_id

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            with contextlib.suppress(*REDIS_ERRORS):
                await self.redis.set(_key(self.node_id), self._owner, ex=TTL_SECONDS)

    async def release(self) -> None:
        if self._renewer:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(*REDIS_ERRORS):
            if await self.redis.get(_key(self.node_id)) == self._owner:
                await self.redis.delete(_key(self.node_id))


def _key(node: int | None) -> str:
    return f"chatee:node:{node}"
