"""Server-Sent Events over the Redis event stream (framing by sse-starlette)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse

from chatee.bus import Event

TERMINAL_EVENTS = frozenset({"turn.completed", "turn.failed"})


def event_source(events: AsyncIterator[Event]) -> EventSourceResponse:
    async def frames() -> AsyncIterator[dict[str, str]]:
        async for event in events:
            yield {"id": event.id, "event": event.event, "data": json.dumps(event.data)}

    return EventSourceResponse(frames(), ping=15, headers={"Cache-Control": "no-cache"})


async def turn_events(events: AsyncIterator[Event], turn_id: str) -> AsyncIterator[Event]:
    """The events of one turn, ending after its `turn.completed` / `turn.failed`."""
    async for event in events:
        if event.data.get("turn_id") != turn_id:
            continue
        yield event
        if event.event in TERMINAL_EVENTS:
            return
