"""Server-Sent Events over the Redis event stream (framing by sse-starlette)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse

from api.deps import Principal, revoked
from chatee.bus import Event
from chatee.services import Services


def event_source(
    events: AsyncIterator[Event], svc: Services, caller: Principal
) -> EventSourceResponse:
    """The events as SSE, for as long as the caller's token stays valid: it is re-checked
    every `security.stream_recheck_seconds`, and a revoked one ends the stream."""

    async def frames() -> AsyncIterator[dict[str, str]]:
        async for event in _while_valid(events, svc, caller):
            yield {"id": event.id, "event": event.event, "data": json.dumps(event.data)}

    return EventSourceResponse(frames(), ping=15, headers={"Cache-Control": "no-cache"})


async def _while_valid(
    events: AsyncIterator[Event], svc: Services, caller: Principal
) -> AsyncIterator[Event]:
    period = svc.settings.security.stream_recheck_seconds
    upcoming = asyncio.ensure_future(anext(events))
    checked = time.monotonic()
    try:
        while True:
            wait = max(0.0, checked + period - time.monotonic())
            done, _ = await asyncio.wait({upcoming}, timeout=wait)
            if time.monotonic() - checked >= period:
                if (await revoked(svc, [caller]))[0]:
                    return
                checked = time.monotonic()
            if not done:
                continue
            try:
                event = upcoming.result()
            except StopAsyncIteration:
                return
            yield event
            upcoming = asyncio.ensure_future(anext(events))
    finally:
        upcoming.cancel()
