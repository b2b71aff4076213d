"""Session event stream on Redis Streams: `chatee:session:<id>:events`.

Activities append; the API reads from any stream id, so SSE `id:` is the Redis stream id and a
client resumes with `Last-Event-ID`. Streams are trimmed by age (kept at least
`events.retention_seconds`) and, as a safety net, by length.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatee.logging import scrub

_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_U64 = 2**64 - 1


def is_stream_id(text: str) -> bool:
    """A Redis stream id (`<ms>` or `<ms>-<seq>`, each part a 64-bit unsigned number)."""
    match = _STREAM_ID.fullmatch(text)
    return bool(match) and all(int(part) <= _U64 for part in match.groups() if part)


# KEYS[1] stream, KEYS[2] dedupe marker ('' for none)
# ARGV: min id kept, max length, ttl seconds, event name, JSON data
_PUBLISH = """
if KEYS[2] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then
    return false
  end
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*',
                      'event', ARGV[4], 'data', ARGV[5])
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return id
"""


def stream_key(session_id: int | str) -> str:
    return f"chatee:session:{session_id}:events"


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: dict[str, Any]


class EventBus:
    def __init__(self, redis: Redis, retention_seconds: int = 86400, max_len: int = 100_000):
        self.redis = redis
        self.retention_seconds = retention_seconds
        self.max_len = max_len
        self._publish = redis.register_script(_PUBLISH)

    async def publish(
        self, session_id: int | str, event: str, data: dict[str, Any], once_key: str | None = None
    ) -> str | None:
        """Append an event; with `once_key`, only the first call with that key appends
        (a retried activity cannot show the same event twice). Returns the stream id."""
        dedupe = f"chatee:once:{session_id}:{once_key}" if once_key else ""
        min_id = max(0, int(time.time() * 1000) - self.retention_seconds * 1000)
        # clients read these events: mask known secrets (a provider's error may quote its key)
        data = _scrubbed({**data, "session_id": str(session_id)})
        payload = json.dumps(data, separators=(",", ":"))
        result = await self._publish(
            keys=[stream_key(session_id), dedupe],
            args=[min_id, self.max_len, self.retention_seconds, event, payload],
        )
        return _text(result) if result else None

    async def last_id(self, session_id: int | str) -> str:
        """The id of the newest event, or `0-0`: reading after it yields only new events."""
        newest = await self.redis.xrevrange(stream_key(session_id), count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def read(
        self, session_id: int | str, after: str, block_ms: int = 15000, count: int = 500
    ) -> list[Event]:
        reply = await self.redis.xread({stream_key(session_id): after}, count=count, block=block_ms)
        events: list[Event] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                fields = {_text(k): _text(v) for k, v in fields.items()}
                events.append(Event(_text(entry_id), fields["event"], json.loads(fields["data"])))
        return events

    async def follow(
        self, session_id: int | str, after: str, block_ms: int = 10000
    ) -> AsyncIterator[Event]:
        """Every event after `after`, forever; the caller stops iterating. While Redis is
        unreachable it keeps trying from the same position, so nothing is skipped."""
        backoff = 0.1
        while True:
            try:
                events = await self.read(session_id, after, block_ms=block_ms)
            except (RedisConnectionError, RedisTimeoutError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            for event in events:
                after = event.id
                yield event


def _scrubbed(value: Any) -> Any:
    """`value` with every string in it scrubbed (string by string, so JSON stays JSON)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
