"""One turn's events, streamed, resumed after a drop, each yielded once.

`POST /chat/stream` starts the turn (with a `client_msg_id`, so a resend never starts a second
one). If the connection drops, the stream resumes on `GET /sessions/{id}/events` with
`Last-Event-ID` = the last event's stream id; if it dropped before the first event, the same
send is posted again, which replays that turn's events from its start. Events at or before
the last one yielded are skipped, so none comes twice, and none is lost while the session's
stream retains it (24 h by default).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from httpx_sse import EventSource, aconnect_sse

from chatee.client.errors import ApiError, RateLimited, StreamLost, Unavailable
from chatee.client.events import (
    FINAL,
    MessageDelta,
    StepRetry,
    TurnCompleted,
    TurnEvent,
    parse_event,
    stream_key,
)

if TYPE_CHECKING:
    from chatee.client.base import BaseClient

# the API pings every 15 s; a connection silent for longer than this is dead
STREAM_TIMEOUT = httpx.Timeout(10, read=45)


@asynccontextmanager
async def open_sse(
    http: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> AsyncIterator[EventSource]:
    """An SSE response, or the typed error of a refused request."""
    async with aconnect_sse(http, method, url, timeout=STREAM_TIMEOUT, **kwargs) as source:
        if source.response.status_code >= 400:
            await source.response.aread()
            raise ApiError.from_response(source.response)
        yield source


async def sse_events(source: EventSource) -> AsyncIterator[TurnEvent]:
    async for sse in source.aiter_sse():
        if sse.data:  # keep-alive pings carry no data
            yield parse_event(sse.id, sse.event, json.loads(sse.data))


class TurnStream:
    """`async for event in client.stream_turn(...)`; afterwards (or meanwhile) `text` is the
    reply so far without the partial text of retried steps, `final` the ending event."""

    def __init__(
        self,
        client: BaseClient,
        session_id: str,
        content: str,
        client_msg_id: str | None = None,
        resume_timeout: float = 120,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.content = content
        self.client_msg_id = client_msg_id or uuid.uuid4().hex
        self.resume_timeout = resume_timeout
        self.turn_id: str | None = None
        self.last_id: str | None = None
        self.final: TurnEvent | None = None
        self.reconnects = 0  # streams resumed after a drop
        self.resends = 0  # sends answered 503 (busy or away), sent again
        self._texts: dict[int | None, str] = {}

    @property
    def text(self) -> str:
        return "".join(self._texts[k] for k in sorted(self._texts, key=lambda s: s or 0))

    @property
    def completed(self) -> bool:
        return isinstance(self.final, TurnCompleted)

    def __aiter__(self) -> AsyncIterator[TurnEvent]:
        return self._events()

    async def run(self) -> TurnStream:
        """Consume the whole turn (events are dropped); returns self."""
        async for _ in self:
            pass
        return self

    async def _events(self) -> AsyncIterator[TurnEvent]:
        lost_since: float | None = None
        delay = 0.2
        while self.final is None:
            wait, resend = delay, False
            try:
                async with self._connect() as source:
                    async for event in sse_events(source):
                        lost_since, delay = None, 0.2
                        if not self._new(event):
                            continue
                        event = self._apply(event)
                        yield event
                        if event.event in FINAL:
                            self.final = event
                            return
            except (Unavailable, RateLimited) as exc:  # busy, restarting, not confirmed yet
                wait, resend = exc.retry_after or delay, self.last_id is None
            except httpx.TransportError:
                pass  # dropped: resume
            # here the stream dropped or ended early (a revoked token, a restarting server)
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > self.resume_timeout:
                raise StreamLost(f"turn {self.turn_id or '?'}: stream lost; last {self.last_id}")
            if resend:
                self.resends += 1
            else:
                self.reconnects += 1
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5)

    def _connect(self) -> AbstractAsyncContextManager[EventSource]:
        http = self.client.http
        if self.last_id is None:
            body = {
                "session_id": self.session_id,
                "content": self.content,
                "client_msg_id": self.client_msg_id,
            }
            return open_sse(http, "POST", "/api/v1/chat/stream", json=body, auth=self.client.auth)
        return open_sse(
            http,
            "GET",
            f"/api/v1/sessions/{self.session_id}/events",
            headers={"Last-Event-ID": self.last_id},
            auth=self.client.auth,
        )

    def _new(self, event: TurnEvent) -> bool:
        if self.turn_id is not None and event.turn_id != self.turn_id:
            return False  # another turn of the session
        if self.last_id is not None and stream_key(event.id) <= stream_key(self.last_id):
            return False  # had it already
        self.turn_id = event.turn_id
        self.last_id = event.id
        return True

    def _apply(self, event: TurnEvent) -> TurnEvent:
        if isinstance(event, MessageDelta):
            self._texts[event.step] = self._texts.get(event.step, "") + event.text
        elif isinstance(event, StepRetry):
            return dataclasses.replace(event, dropped=self._texts.pop(event.step, ""))
        return event
