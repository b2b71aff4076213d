"""One socket: its bounded outgoing queue, the writer that drains it, and the inbox cursor
that makes delivery exact (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
import uuid
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import asdict
from functools import partial
from typing import Any, Protocol

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from api.deps import Principal
from chatee.config import Messaging
from chatee.logging import get_logger
from chatee.messaging.fanout import new_message_frame
from chatee.messaging.service import Messenger
from chatee.services import Services

log = get_logger(__name__)

UNAUTHORIZED = 4401  # close codes: the token is missing, invalid or revoked
TRY_AGAIN_LATER = 1013  # a dependency is away; the token may be fine
FILL_PAGE = 200


class Owner(Protocol):
    """What a connection needs of the hub that holds it (`api.ws.hub.Hub`)."""

    svc: Services
    messenger: Messenger
    knobs: Messaging


class Connection:
    """One socket: a bounded queue of frames, its writer, and the inbox cursor.

    Idle sockets are the common case, so one costs as little as it can: slots, and no queue
    or writer task unless the transport is full (frames then queue behind the one that
    waits; the writer drains them and ends)."""

    __slots__ = (
        "id", "hub", "ws", "principal", "user_id", "frames", "droppable", "cursor", "want",
        "syncing", "filling", "closed", "tasks", "writer",
    )  # fmt: skip

    def __init__(self, hub: Owner, ws: WebSocket, principal: Principal) -> None:
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
            text = encode(frame)
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
        """A pushed inbox entry (`message.new`, `inbox.event`): queued only if it is the next
        one."""
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
                m = self.hub.messenger
                items = await m.named_items(await m.store.inbox(self.user_id, self.cursor, count))
                progressed = False
                for item in items:
                    if self.syncing or self.cursor is None:
                        return
                    if item.inbox_seq <= self.cursor:
                        continue
                    if item.inbox_seq != self.cursor + 1:
                        break
                    if not self._queue_message(item.inbox_seq, encode(new_message_frame(item))):
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
        try:
            page = await self.hub.messenger.inbox_page(self.user_id, after, limit)
        except Exception:
            self.syncing = was_syncing
            self._fill_gap()
            raise
        self.control({"type": "sync", **asdict(page), **echo_ref(ref)})
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


def encode(frame: dict[str, Any] | None) -> str:
    return json.dumps(frame, separators=(",", ":"))


def echo_ref(ref: Any) -> dict[str, Any]:
    """Client frames may carry `ref`; the reply echoes it for correlation."""
    return {"ref": ref} if ref is not None else {}
