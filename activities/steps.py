"""What every chain-step activity does around its work: announce the step once, tell clients
to drop partial output when it is retried, say when it completed, and keep heartbeating."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

from chatee.bus import EventBus
from workflows.events import STEP_COMPLETED, STEP_RETRY, STEP_STARTED, TURN_STARTED
from workflows.types import StepInput


async def announce(bus: EventBus, inp: StepInput) -> None:
    turn, step = inp.turn_id, inp.step
    if inp.start_turn:
        await bus.publish(inp.session_id, TURN_STARTED, {"turn_id": turn}, f"{turn}:started")
    attempt = activity.info().attempt
    if attempt > 1 or inp.failover:
        reason = "failover" if inp.failover else "retry"
        await bus.publish(
            inp.session_id,
            STEP_RETRY,
            {"turn_id": turn, "step": step, "attempt": attempt, "reason": reason},
            f"{turn}:{step}:{reason}:{attempt}",
        )
    await bus.publish(
        inp.session_id,
        STEP_STARTED,
        {"turn_id": turn, "step": step, "action": inp.action},
        f"{turn}:{step}:started",
    )


async def complete(bus: EventBus, inp: StepInput, result: str, **extra: object) -> None:
    await bus.publish(
        inp.session_id,
        STEP_COMPLETED,
        {"turn_id": inp.turn_id, "step": inp.step, "action": inp.action, "result": result, **extra},
        f"{inp.turn_id}:{inp.step}:completed",
    )


@contextlib.asynccontextmanager
async def heartbeating(every: float = 1.0) -> AsyncIterator[None]:
    """Heartbeat in the background, so a cancel reaches the activity even while it waits on
    a slow provider (cancellation is delivered on a heartbeat)."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
