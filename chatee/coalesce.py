"""Coalescing: concurrent calls that arrive while one batch runs become the next batch.

Under load many sends are in flight at once, each wanting the same kind of round trip (a cache
read, a publish, a ledger transaction). Each round trip costs mostly fixed client overhead,
so one round trip for the batch costs the process far less than one per call, and a call
waits at most one batch longer. With no concurrency a batch is a single call: nothing waits
for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

Outcome = tuple[Out | None, BaseException | None]  # one call's result, or its exception
Runner = Callable[[list[In]], Awaitable[list[Outcome[Out]]]]


class Coalescer(Generic[In, Out]):
    """`await coalescer(item)`: run `item` in the next batch; its own result or exception.

    `run_batch` gets the batch's items and returns one outcome per item, in order; if it
    raises, every call in the batch gets that exception."""

    def __init__(self, run_batch: Runner[In, Out], max_batch: int = 200) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.queue: list[tuple[In, asyncio.Future[Out]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def __call__(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self.queue.append((item, future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Batches until the queue is empty. Cancelled (the loop is shutting down), nothing
        will run what is left: its callers are cancelled too."""
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        try:
            while self.queue:
                batch = self.queue[: self.max_batch]
                del self.queue[: self.max_batch]
                batch = [(item, future) for item, future in batch if not future.done()]
                if batch:
                    await self._run(batch)
        except BaseException:
            for _, future in batch + self.queue:
                future.cancel()
            self.queue.clear()
            raise

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            outcomes = await self.run_batch([item for item, _ in batch])
        except Exception as exc:
            outcomes = [(None, exc)] * len(batch)
        for (_, future), (result, exc) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if exc is None:
                future.set_result(result)  # type: ignore[arg-type]
            else:
                future.set_exception(exc)
