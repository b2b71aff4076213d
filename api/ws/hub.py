"""This process's sockets: attach/detach, push dispatch, presence leases, the revocation
re-check, and the reconcile and recovery loops."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket

from api.deps import Principal, Services, revoked
from api.errors import dependency_down
from api.ws.connection import UNAUTHORIZED, Connection
from chatee.logging import get_logger
from chatee.messaging import changes, conversations, presence, sending
from chatee.messaging.fanout import Targets, decode, message_text, push_channel
from chatee.redis import REDIS_ERRORS, Subscriptions

log = get_logger(__name__)


class Hub:
    """This process's sockets, its pub/sub subscription, and the background loops: presence
    leases, the inbox reconcile, and the recovery of sends whose fan-out never finished."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.messenger = svc.messenger
        self.knobs = svc.settings.messaging
        self.conns: dict[int, set[Connection]] = {}
        self.node = uuid.uuid4().hex  # tags this process's pushes: it skips their echo
        svc.messenger.pushes.push_locally(self.node, self.push_to_sockets)
        # the push channels of the users with sockets here; after a (re)subscription, fill
        # whatever was published while it was down
        self.pushes = Subscriptions(svc.redis, self.dispatch, self._resubscribed)
        self.tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("ws-pubsub", self.pushes.run),
            ("ws-leases", self._leases),
            ("ws-reconcile", self._reconcile),
            ("ws-recovery", self._recover),
            ("ws-revocations", self._revocations),
        ]
        self.tasks = [asyncio.create_task(fn(), name=name) for name, fn in loops]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        conns = [c for group in self.conns.values() for c in group]
        await asyncio.gather(*(c.close(1001, "server shutting down") for c in conns))
        await asyncio.gather(*(c.finish() for c in conns), return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self.svc.redis.pipeline(transaction=False) as pipe:
                for c in conns:
                    pipe.zrem(presence.presence_key(c.user_id), c.id)
                await pipe.execute()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- sockets ------------------------------------------------------------------------------

    async def attach(self, ws: WebSocket, principal: Principal, after: int | None) -> Connection:
        user_id = principal.user_id
        conn = Connection(self, ws, principal)
        self.conns.setdefault(user_id, set()).add(conn)
        try:
            await self.pushes.add(self._channel(user_id))  # pushes from now on reach it
            head = (await self.messenger.store.inbox_heads([user_id]))[user_id]
        except Exception:
            await self.detach(conn)
            raise
        conn.want = max(conn.want, head)
        conn.start(head if after is None else min(after, head))
        try:
            if await presence.connect(
                self.svc.redis, user_id, conn.id, self.knobs.presence_ttl_seconds
            ):
                self._spawn(self._announce(user_id))
        except REDIS_ERRORS:
            log.warning("presence unavailable", user=user_id)
        return conn

    async def detach(self, conn: Connection) -> None:
        group = self.conns.get(conn.user_id, set())
        if conn in group:
            group.discard(conn)
            await self.pushes.discard(self._channel(conn.user_id))
        if not group:
            self.conns.pop(conn.user_id, None)
        await conn.finish()
        try:
            if await presence.disconnect(self.svc.redis, conn.user_id, conn.id):
                self._spawn(self._announce(conn.user_id))
        except REDIS_ERRORS:
            pass

    def _channel(self, user_id: int) -> str:
        return push_channel(user_id, self.knobs.push_buckets)

    async def _announce(self, user_id: int) -> None:
        """Tell the people who share a private chat or a small group with the user."""
        try:
            contacts = await conversations.contacts(
                self.messenger.db, user_id, self.knobs.presence_fanout_max
            )
            state = (await presence.status(self.svc.redis, [user_id]))[0]
            frame = {"type": "presence", **state.to_json()}
            await self.messenger.publish_presence(frame, contacts)
        except Exception:
            log.exception("presence announcement failed", user=user_id)

    # -- background loops ---------------------------------------------------------------------

    def _resubscribed(self) -> None:
        self._spawn(self._reconcile_once())

    def dispatch(self, data: str) -> None:
        """A push from pub/sub; this process's own were delivered when it sent them."""
        if data.startswith(self.node):
            return
        try:
            _, targets, text = decode(data)
        except ValueError:
            log.warning("unreadable push dropped")
            return
        self.push_to_sockets(targets, text)

    def push_to_sockets(self, targets: Targets, text: str) -> None:
        """Hand a push to the sockets this process holds of its users. The frame text is
        forwarded as is (a `message.new` gets the user's inbox_seq put in front)."""
        conns = self.conns
        if isinstance(targets, dict):
            for user_id, inbox_seq in targets.items():
                if group := conns.get(user_id):
                    frame = message_text(inbox_seq, text)
                    for conn in list(group):
                        conn.offer(inbox_seq, frame)
        else:
            for user_id in targets:
                for conn in list(conns.get(user_id, ())):
                    conn.ephemeral(None, text)

    async def _leases(self) -> None:
        ttl = self.knobs.presence_ttl_seconds
        while True:
            await asyncio.sleep(ttl / 3)
            leases = [(c.user_id, c.id) for group in self.conns.values() for c in group]
            if leases:
                try:
                    await presence.renew(self.svc.redis, leases, ttl)
                except REDIS_ERRORS:
                    log.warning("presence renewal failed")

    async def _revocations(self) -> None:
        """Close the sockets whose token or API key was revoked after they connected (logout,
        a reused refresh token, a deleted key): one batched check per period."""
        while True:
            await asyncio.sleep(self.svc.settings.security.stream_recheck_seconds)
            conns = [c for group in self.conns.values() for c in group]
            if not conns:
                continue
            try:
                gone = await revoked(self.svc, [c.principal for c in conns])
            except Exception as exc:
                _background_failure("re-checking sockets' tokens failed", exc)
                continue
            for conn, is_revoked in zip(conns, gone, strict=True):
                if is_revoked:
                    self._spawn(conn.close(UNAUTHORIZED, "token revoked"))

    async def reconcile(self) -> None:
        users = list(self.conns)
        if not users:
            return
        heads = await self.messenger.store.inbox_heads(users)
        for user_id, head in heads.items():
            for conn in list(self.conns.get(user_id, ())):
                conn.behind(head)

    async def _reconcile(self) -> None:
        while True:
            await asyncio.sleep(self.knobs.reconcile_seconds)
            await self._reconcile_once()

    async def _reconcile_once(self) -> None:
        try:
            await self.reconcile()
        except Exception as exc:
            _background_failure("inbox reconcile failed", exc)

    async def _recover(self) -> None:
        """Finish sends and changes whose process died between storing and fanning out (any
        API process may do it; a Redis lock keeps two from doing the same one at once)."""
        while True:
            await asyncio.sleep(self.knobs.recovery_interval_seconds)
            try:
                for message_id in await self.messenger.pending_fanouts():
                    lock = f"chatee:recover:{message_id}"
                    if await self.svc.redis.set(lock, "1", nx=True, ex=60):
                        await sending.resume_send(self.svc, message_id)
                for change_id in await self.messenger.pending_changes():
                    lock = f"chatee:recover:{change_id}"
                    if await self.svc.redis.set(lock, "1", nx=True, ex=60):
                        await changes.resume_change(self.svc, change_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _background_failure("send recovery failed", exc)


def _background_failure(what: str, exc: Exception) -> None:
    """A dependency that is away is one warning line per attempt, not a traceback each time."""
    down = dependency_down(exc)
    if down is not None:
        log.warning(what, dependency=down, error=type(exc).__name__)
    else:
        log.exception(what)
