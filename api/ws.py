"""The WebSocket hub: `WS /ws?token=<jwt>[&after=<inbox_seq>][&session_id=<id>]`.

One `Hub` per API process. Each socket is a `Connection` with its own bounded outgoing queue
and writer task (both exist only while frames wait: idle sockets are cheap), so a client that
stops reading only ever blocks itself. Pushes reach the sockets on every process through one
Redis pub/sub channel (chatee/messaging/fanout.py); a push this process sends goes to its own
sockets directly.

Inbox delivery is exact per socket. A connection keeps a cursor — the last `inbox_seq` it
queued — and only ever queues `cursor + 1`: a push that arrives early (out of order, or after
one was lost) makes it read the gap from the inbox first, a duplicate is dropped. Connect with
`after=<your last inbox_seq>` and the socket sends everything after it, in order, once;
without it the socket starts at the current end. When the queue is full the socket stops
taking messages and tells the client to resync (`error` code `resync` with `after`); the client
answers with `sync` frames until `has_more` is false, and live delivery resumes from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import types
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.deps import Principal, Resources, authenticate, revoked
from api.errors import Problem, dependency_down
from api.limits import FrameGuard
from api.routers.chat import submit_turn
from api.routers.conversations import complete_send, post_message
from api.routers.sync import sync_page
from api.schemas import ChatIn
from api.sse import TERMINAL_EVENTS
from chatee import store as session_store
from chatee.bus import Event
from chatee.logging import get_logger
from chatee.messaging import conversations, presence
from chatee.messaging.conversations import MessagingError
from chatee.messaging.fanout import (
    PUSH_CHANNEL,
    Targets,
    decode,
    message_text,
    new_message_frame,
)
from chatee.messaging.service import Messenger
from chatee.metrics import WS_CONNECTIONS
from chatee.redis import Subscription

log = get_logger(__name__)
router = APIRouter()

UNAUTHORIZED = 4401
TRY_AGAIN_LATER = 1013
FILL_PAGE = 200


class Connection:
    """One socket: a bounded queue of frames, its writer, and the inbox cursor.

    Idle sockets are the common case, so one costs as little as it can: slots, and no queue
    or writer task unless the transport is full (frames then queue behind the one that
    waits; the writer drains them and ends)."""

    __slots__ = (
        "id", "hub", "ws", "principal", "user_id", "frames", "droppable", "cursor", "want",
        "syncing", "filling", "closed", "tasks", "writer",
    )  # fmt: skip

    def __init__(self, hub: Hub, ws: WebSocket, principal: Principal) -> None:
        self.id = uuid.uuid4().hex
        self.hub = hub
        self.ws = ws
        self.principal = principal  # re-checked by the hub: a revoked token closes the socket
        self.user_id = principal.user_id
        self.frames: deque[tuple[str, bool]] | None = None
        self.droppable = 0
        self.cursor: int | None = None  # set by start(); pushes wait in `want` until then
        self.want = 0  # highest inbox_seq known to exist that is not queued yet
        self.syncing = False  # the client pages with `sync`; no live messages meanwhile
        self.filling: asyncio.Task[None] | None = None
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] | None = None
        self.writer: asyncio.Task[None] | None = None

    @property
    def limit(self) -> int:
        return self.hub.knobs.ws_queue_size

    # -- the outgoing queue ------------------------------------------------------------------

    def _put(self, frame: dict[str, Any] | None, droppable: bool, text: str | None = None) -> bool:
        """Send a frame, or queue it behind the ones still waiting for the transport (`text`:
        its JSON, when the caller has it already)."""
        if self.closed:
            return False
        if text is None:
            text = _encode(frame)
        if self.writer is None:  # nothing is waiting
            self._send_now(text)
            return True
        limit = self.limit
        if droppable and self.droppable >= limit:
            return False
        if self.frames is None:
            self.frames = deque()
        elif len(self.frames) >= 4 * limit + 64:  # not even replies are being read
            self.spawn(self.close(1008, "client too slow"))
            return False
        self.frames.append((text, droppable))
        self.droppable += droppable
        return True

    def control(self, frame: dict[str, Any]) -> None:
        """Replies, acks, errors: always queued (bounded only by the hard cap)."""
        self._put(frame, False)

    def ephemeral(self, frame: dict[str, Any] | None, text: str | None = None) -> None:
        """Typing, presence, agent events: dropped when the queue is full."""
        self._put(frame, True, text)

    def _send_now(self, text: str) -> None:
        """Hand a frame to the transport without starting a task. uvicorn's send only waits
        while the client's socket buffer is full, so it nearly always finishes in its first
        step (what Python 3.12's eager tasks do; we run 3.11). When it has to wait, a writer
        task finishes it and then drains the frames queued meanwhile."""
        sending = self.ws.send_text(text)
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return
        except Exception:  # the socket is gone; the receive loop notices and detaches
            self.closed = True
            return
        self.writer = asyncio.create_task(self._write(_resume(sending, waiting_on)))

    async def _write(self, first: Awaitable[None]) -> None:
        """Finish the frame the transport could not take at once, drain the queue, end."""
        try:
            await first
            while self.frames:
                text, droppable = self.frames.popleft()
                self.droppable -= droppable
                await self.ws.send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket is gone; the receive loop notices and detaches
            self.closed = True
        finally:
            self.frames = None
            self.droppable = 0
            self.writer = None

    # -- inbox delivery -----------------------------------------------------------------------

    def start(self, cursor: int) -> None:
        self.cursor = cursor
        self._fill_gap()

    def offer(self, inbox_seq: int, text: str) -> None:
        """A pushed `message.new` frame: queued only if it is the next one."""
        if self.syncing or self.cursor is None or self.filling is not None:
            self.want = max(self.want, inbox_seq)
            self._fill_gap()
            return
        if inbox_seq <= self.cursor:
            return  # already queued
        if inbox_seq > self.cursor + 1:
            self.want = max(self.want, inbox_seq)
            self._fill_gap()
            return
        self._queue_message(inbox_seq, text)

    def _queue_message(self, inbox_seq: int, text: str) -> bool:
        if not self._put(None, True, text):
            self._resync()
            return False
        self.cursor = inbox_seq
        return True

    def _resync(self) -> None:
        if self.syncing or self.closed:
            return
        self.syncing = True
        self.control(
            {
                "type": "error",
                "code": "resync",
                "detail": "too many messages queued for this socket; send sync {after}",
                "after": self.cursor,
            }
        )

    def behind(self, head: int) -> None:
        """The inbox is at `head` (periodic reconcile): fill whatever never arrived."""
        self.want = max(self.want, head)
        self._fill_gap()

    def _fill_gap(self) -> None:
        if self.cursor is None or self.syncing or self.closed or self.filling is not None:
            return
        if self.want <= self.cursor:
            return
        self.filling = asyncio.create_task(self._fill(), name=f"ws-fill-{self.id}")

    async def _fill(self) -> None:
        try:
            while not self.syncing and not self.closed and self.cursor is not None:
                if self.want <= self.cursor:
                    return
                if self.want - self.cursor > self.hub.knobs.ws_gap_fill_max:
                    self._resync()
                    return
                count = min(FILL_PAGE, self.want - self.cursor)
                items = await self.hub.messenger.store.inbox(self.user_id, self.cursor, count)
                progressed = False
                for item in items:
                    if self.syncing or self.cursor is None:
                        return
                    if item.inbox_seq <= self.cursor:
                        continue
                    if item.inbox_seq != self.cursor + 1:
                        break
                    if not self._queue_message(item.inbox_seq, _encode(new_message_frame(item))):
                        return
                    progressed = True
                if not progressed:
                    return  # not visible yet: the next push or the reconcile tries again
        except Exception:
            log.exception("filling a socket's inbox gap failed", user=self.user_id)
        finally:
            self.filling = None

    async def sync(self, after: int, limit: int | None, ref: Any) -> None:
        """Answer a `sync` frame: entries after `after`, then live delivery from there."""
        was_syncing, self.syncing = self.syncing, True  # live pushes wait (noted in `want`)
        knobs = self.hub.knobs
        size = min(limit or knobs.sync_page_size, knobs.sync_page_size)
        try:
            page = await sync_page(self.hub.messenger, self.user_id, after, size)
        except Exception:
            self.syncing = was_syncing
            self._fill_gap()
            raise
        self.control({"type": "sync", **page.model_dump(), **_ref(ref)})
        self.cursor = page.next_after
        self.syncing = page.has_more
        self._fill_gap()

    # -- lifecycle ----------------------------------------------------------------------------

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason)

    async def finish(self) -> None:
        self.closed = True
        pending = [
            *([self.writer] if self.writer else []),
            *(self.tasks or ()),
            *([self.filling] if self.filling else []),
        ]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Await the rest of `coro`, which was stepped by hand and now waits on `waiting_on`:
    the task awaiting this waits on that future, then the coroutine carries on."""
    while True:
        try:
            value = yield waiting_on
        except BaseException as exc:
            step = partial(coro.throw, exc)
        else:
            step = partial(coro.send, value)
        try:
            waiting_on = step()
        except StopIteration:
            return


def _encode(frame: dict[str, Any] | None) -> str:
    return json.dumps(frame, separators=(",", ":"))


def _ref(ref: Any) -> dict[str, Any]:
    """Client frames may carry `ref`; the reply echoes it for correlation."""
    return {"ref": ref} if ref is not None else {}


class Hub:
    """This process's sockets, its pub/sub subscription, and the background loops: presence
    leases, the inbox reconcile, and the recovery of sends whose fan-out never finished."""

    def __init__(self, res: Resources, messenger: Messenger) -> None:
        self.res = res
        self.messenger = messenger
        self.knobs = res.settings.messaging
        self.conns: dict[int, set[Connection]] = {}
        self.node = uuid.uuid4().hex  # tags this process's pushes: it skips their echo
        messenger.pushes.deliver_locally(self.node, self.deliver)
        self.tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        # after a (re)subscription, fill whatever was published while it was down
        pushes = Subscription(self.res.redis, PUSH_CHANNEL, self.dispatch, self._resubscribed)
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("ws-pubsub", pushes.run),
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
            async with self.res.redis.pipeline(transaction=False) as pipe:
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
        self.conns.setdefault(user_id, set()).add(conn)  # pushes from now on reach it
        try:
            head = (await self.messenger.store.inbox_heads([user_id]))[user_id]
        except Exception:
            await self.detach(conn)
            raise
        conn.want = max(conn.want, head)
        conn.start(head if after is None else min(after, head))
        try:
            if await presence.connect(
                self.res.redis, user_id, conn.id, self.knobs.presence_ttl_seconds
            ):
                self._spawn(self._announce(user_id))
        except RedisError:
            log.warning("presence unavailable", user=user_id)
        return conn

    async def detach(self, conn: Connection) -> None:
        group = self.conns.get(conn.user_id, set())
        group.discard(conn)
        if not group:
            self.conns.pop(conn.user_id, None)
        await conn.finish()
        try:
            if await presence.disconnect(self.res.redis, conn.user_id, conn.id):
                self._spawn(self._announce(conn.user_id))
        except RedisError:
            pass

    async def _announce(self, user_id: int) -> None:
        """Tell the people who share a private chat or a small group with the user."""
        try:
            contacts = await conversations.contacts(
                self.messenger.db, user_id, self.knobs.presence_fanout_max
            )
            state = (await presence.status(self.res.redis, [user_id]))[0]
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
        self.deliver(targets, text)

    def deliver(self, targets: Targets, text: str) -> None:
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
                    await presence.renew(self.res.redis, leases, ttl)
                except RedisError:
                    log.warning("presence renewal failed")

    async def _revocations(self) -> None:
        """Close the sockets whose token or API key was revoked after they connected (logout,
        a reused refresh token, a deleted key): one batched check per period."""
        while True:
            await asyncio.sleep(self.res.settings.security.stream_recheck_seconds)
            conns = [c for group in self.conns.values() for c in group]
            if not conns:
                continue
            try:
                gone = await revoked(self.res, [c.principal for c in conns])
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
        """Finish sends whose process died between storing and fanning out (any API process
        may do it; a Redis lock keeps two from doing the same one at once)."""
        while True:
            await asyncio.sleep(self.knobs.recovery_interval_seconds)
            try:
                for message_id in await self.messenger.pending_fanouts():
                    lock = f"chatee:recover:{message_id}"
                    if await self.res.redis.set(lock, "1", nx=True, ex=60):
                        await self.resume(message_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _background_failure("send recovery failed", exc)

    async def resume(self, message_id: int) -> None:
        message = await self.messenger.store.get(message_id)
        if message is None:
            return
        view = await conversations.load_view(
            self.messenger.db, self.messenger.cache, message.conversation_id
        )
        if view is None:
            await self.messenger.store.mark_fanned_out(message_id)
            return
        log.info("resuming an unfinished send", message=message_id)
        await complete_send(self.res, self.messenger, view, message)


def _background_failure(what: str, exc: Exception) -> None:
    """A dependency that is away is one warning line per attempt, not a traceback each time."""
    down = dependency_down(exc)
    if down is not None:
        log.warning(what, dependency=down, error=type(exc).__name__)
    else:
        log.exception(what)


# -- the endpoint -------------------------------------------------------------------------------


async def _authenticate(ws: WebSocket, res: Resources) -> Principal | None:
    """An access token or an API key with the `conversations` or `chat` scope (api.deps)."""
    token = ws.query_params.get("token")
    if token is None:
        header = ws.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
    if not token or res.settings.jwt_secret is None:
        return None
    principal = await authenticate(res, token)  # Problem(503) when revocations can't be checked
    if principal is None or not (
        principal.allows("conversations", True) or principal.allows("chat", True)
    ):
        return None
    return principal


def _int_param(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() and len(raw) <= 18 else None


async def _accept(ws: WebSocket) -> None:
    """The handshake answer carries the connection's request id (bound by RequestContext),
    like every HTTP response, so a client can quote it."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    headers = [(b"x-request-id", request_id.encode())] if request_id else None
    await ws.accept(headers=headers)


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    try:
        principal = await _authenticate(ws, hub.res)
    except Problem:  # a dependency is away: the token may be fine, so not 4401
        await _accept(ws)
        await ws.close(TRY_AGAIN_LATER, "try again shortly")
        return
    await _accept(ws)
    if principal is None:  # accepted first, so the client sees the code, not a failed handshake
        await ws.close(UNAUTHORIZED, "missing, invalid or revoked token")
        return
    user_id, guard = principal.user_id, FrameGuard(hub.res.settings, principal)
    try:
        conn = await hub.attach(ws, principal, _int_param(ws.query_params.get("after")))
    except Exception:
        log.exception("could not attach a socket", user=user_id)
        await ws.close(1011, "try again shortly")
        return
    WS_CONNECTIONS.inc()
    try:
        session_id = ws.query_params.get("session_id")
        if session_id is not None:
            await _follow_session(conn, session_id)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            if (refusal := guard.check(text or "")) is not None:  # size, rate, scope
                conn.control(refusal)
                continue
            await _handle(conn, text or "")
    except WebSocketDisconnect:
        pass
    finally:
        WS_CONNECTIONS.dec()
        await hub.detach(conn)


def _error(code: str, detail: str, ref: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail, **extra, **_ref(ref)}


class BadFrame(Exception):
    pass


def _field(frame: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = frame.get(name)
    if value is None and not required:
        return None
    if kind is int and isinstance(value, bool):
        raise BadFrame(f"{name} must be an integer")
    if not isinstance(value, kind):
        raise BadFrame(f"{name} must be a{'n integer' if kind is int else ' string'}")
    if kind is str and not value:
        raise BadFrame(f"{name} must not be empty")
    if kind is str and not value.isascii():
        try:  # JSON may carry lone surrogates (`"\ud800"`): not text any store can hold
            value.encode()
        except UnicodeEncodeError:
            raise BadFrame(f"{name} must be valid Unicode text") from None
    return value


def _id_field(frame: dict[str, Any], name: str) -> int:
    value = _field(frame, name, str)
    if not value.isdigit() or len(value) > 20 or int(value) >= 1 << 63:
        raise MessagingError(404, f"{name.split('_')[0]} not found", "not-found")
    return int(value)


async def _handle(conn: Connection, text: str) -> None:
    """One client frame. Nothing a client sends closes the socket: problems come back as
    `error` frames with a `code` and the frame's `ref`."""
    try:
        frame = json.loads(text)
    except ValueError:
        conn.control(_error("bad-frame", "frames are JSON objects"))
        return
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        conn.control(_error("bad-frame", "a frame is a JSON object with a string `type`"))
        return
    kind, ref = frame["type"], frame.get("ref")
    handler = HANDLERS.get(kind)
    if handler is None:
        conn.control(_error("unknown-frame", f"unknown frame type {kind!r}", ref))
        return
    try:
        await handler(conn, frame, ref)
    except BadFrame as exc:
        conn.control(_error("bad-frame", f"{kind}: {exc}", ref))
    except MessagingError as exc:
        conn.control(_error(exc.code, exc.detail, ref, status=exc.status))
    except Problem as exc:
        conn.control(_error(exc.type.rsplit("/", 1)[-1], exc.detail, ref, status=exc.status))
    except Exception as exc:
        down = dependency_down(exc)  # the database, Redis or Temporal away: retry shortly
        if down is not None:
            log.warning("websocket frame refused: dependency unavailable", dependency=down)
            detail = f"{down} is unavailable right now; retry shortly"
            conn.control(_error("unavailable", detail, ref, status=503, dependency=down))
            return
        log.exception("websocket frame failed", type=kind)
        conn.control(_error("internal", "internal error; it has been logged", ref, status=500))


async def _ping(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    conn.control({"type": "pong", "ts": int(time.time() * 1000), **_ref(ref)})


async def _message_send(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    hub, m = conn.hub, conn.hub.messenger
    conversation_id = _id_field(frame, "conversation_id")
    content = _field(frame, "content", str)
    client_msg_id = _field(frame, "client_msg_id", str, required=False)
    if client_msg_id is not None and len(client_msg_id) > 128:
        raise BadFrame("client_msg_id is at most 128 characters")
    view = await m.view(conversation_id, conn.user_id)
    message = await post_message(hub.res, m, view, conn.user_id, content, client_msg_id)
    conn.control(
        {
            "type": "message.ack",
            "client_msg_id": message.client_msg_id,
            "id": str(message.id),
            "seq": message.seq,
            "conversation_id": str(message.conversation_id),
            **_ref(ref),
        }
    )


async def _typing(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    m = conn.hub.messenger
    view = await m.view(_id_field(frame, "conversation_id"), conn.user_id)
    await m.typing(view, conn.user_id)


async def _read(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    m = conn.hub.messenger
    view = await m.view(_id_field(frame, "conversation_id"), conn.user_id)
    seq = _field(frame, "seq", int)
    if seq < 0:
        raise BadFrame("seq must be >= 0")
    await m.mark_read(view, conn.user_id, seq)


async def _sync(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    after = _field(frame, "after", int)
    limit = _field(frame, "limit", int, required=False)
    if after < 0 or (limit is not None and limit < 1):
        raise BadFrame("after must be >= 0 and limit >= 1")
    await conn.sync(after, limit, ref)


async def _chat_send(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    """An agent turn in one of your own sessions; its events arrive as `agent.event`."""
    res = conn.hub.res
    body = ChatIn(
        session_id=str(_id_field(frame, "session_id")),
        content=_field(frame, "content", str),
        client_msg_id=_field(frame, "client_msg_id", str, required=False),
    )
    async with res.db() as db:
        accepted, after = await submit_turn(body, conn.user_id, db, res)
    conn.control(
        {"type": "chat.ack", "session_id": body.session_id, **accepted.model_dump(), **_ref(ref)}
    )
    conn.spawn(_relay_events(conn, body.session_id, after, accepted.turn_id))


async def _follow_session(conn: Connection, raw_id: str) -> None:
    """`?session_id=`: every new event of that session (yours only) as `agent.event`."""
    res = conn.hub.res
    session_id = int(raw_id) if raw_id.isdigit() and len(raw_id) <= 20 else -1
    async with res.db() as db:
        session = await session_store.owned_session(db, conn.user_id, session_id)
    if session is None:
        conn.control(_error("not-found", "session not found", status=404))
        return
    conn.spawn(_relay_events(conn, str(session.id), await res.bus.last_id(session.id), None))


async def _relay_events(conn: Connection, session_id: str, after: str, turn_id: str | None) -> None:
    async for event in conn.hub.res.bus.follow(session_id, after):
        if turn_id is not None and event.data.get("turn_id") != turn_id:
            continue
        conn.ephemeral(_agent_frame(session_id, event))
        if turn_id is not None and event.event in TERMINAL_EVENTS:
            return


def _agent_frame(session_id: str, event: Event) -> dict[str, Any]:
    return {
        "type": "agent.event",
        "session_id": session_id,
        "event": event.event,
        "id": event.id,
        "data": event.data,
    }


HANDLERS: dict[str, Callable[[Connection, dict[str, Any], Any], Awaitable[None]]] = {
    "ping": _ping,
    "message.send": _message_send,
    "chat.send": _chat_send,
    "typing": _typing,
    "read": _read,
    "sync": _sync,
}
