"""Snowflake ids: 64-bit, time-ordered, unique across processes by node id.

Layout (like Twitter's): 41 bits of milliseconds since EPOCH_MS, 10 bits of node id,
12 bits of sequence within the millisecond.
"""

from __future__ import annotations

import threading
import time

from chatee.errors import NotFound

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node_id must be within 0..{MAX_NODE}")
        self.node_id = node_id
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now = _now_ms()
            if now < self._last_ms:  # the clock went back: keep counting from the last tick
                now = self._last_ms
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:  # 4096 ids this millisecond: wait for the next one
                    while now <= self._last_ms:
                        now = _now_ms()
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                ((now - EPOCH_MS) << (NODE_BITS + SEQUENCE_BITS))
                | (self.node_id << SEQUENCE_BITS)
                | self._sequence
            )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def timestamp_ms(snowflake: int) -> int:
    """When an id was made, in Unix milliseconds."""
    return (snowflake >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS


_default: SnowflakeGenerator | None = None


def configure(node_id: int) -> None:
    global _default
    _default = SnowflakeGenerator(node_id)


def new_id() -> int:
    global _default
    if _default is None:
        from chatee.config import get_settings

        _default = SnowflakeGenerator(get_settings().node_id)
    return _default.next_id()


def parse_id(raw: str, what: str) -> int:
    """Ids from outside are decimal snowflakes; anything else names nothing, so it is a 404."""
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 1 << 63:
        raise NotFound(f"{what} not found")
    return int(raw)
