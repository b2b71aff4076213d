"""`SyncClient`: `Client` for code that does not run an event loop (scripts, notebooks).

It owns one event loop (asyncio.Runner), so the connection pool and the token refresh lock
live across calls. Every `Client` method is available with the same arguments; iterators
(`stream_turn`, `follow`, `live`) become ordinary iterators.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from chatee.client.client import Client
from chatee.client.stream import TurnStream

T = TypeVar("T")


class SyncClient:
    def __init__(self, base_url: str, **kwargs: Any) -> None:
        """Arguments as for `Client`."""
        self._runner = asyncio.Runner()
        self.client = Client(base_url, **kwargs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self.client.aclose())
        self._runner.close()

    def run(self, awaitable: Any) -> Any:
        """Run any coroutine of the wrapped `client` on this client's loop."""
        return self._runner.run(awaitable)

    def iterate(self, aiterable: AsyncIterator[T] | Any) -> Iterator[T]:
        iterator = aiter(aiterable)
        try:
            while True:
                try:
                    yield self._runner.run(anext(iterator))
                except StopAsyncIteration:
                    return
        finally:
            if hasattr(iterator, "aclose"):
                self._runner.run(iterator.aclose())

    def stream_turn(self, *args: Any, **kwargs: Any) -> SyncTurnStream:
        return SyncTurnStream(self, self.client.stream_turn(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._runner.run(attr(*a, **k))
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self.iterate(attr(*a, **k))
        if name == "live":
            return lambda *a, **k: self.iterate(attr(*a, **k))
        return attr


class SyncTurnStream:
    """`for event in turn` ; `turn.text`, `turn.final`… as on `TurnStream`."""

    def __init__(self, owner: SyncClient, stream: TurnStream) -> None:
        self._owner = owner
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:
        return self._owner.iterate(self.stream)

    def run(self) -> TurnStream:
        return self._owner.run(self.stream.run())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
