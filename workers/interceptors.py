"""One place that watches every activity attempt: its latency by type and outcome
(`chatee_activity_duration_seconds`) and a log context (`activity`, `workflow_id`,
`session_id`, `turn_id`, `attempt`) bound for every line logged while it runs.

Activities run each in their own asyncio task, so the structlog context bound here is theirs
alone. Workflow code is left untouched: it must stay deterministic and replay-safe.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from chatee.logging import get_logger
from chatee.metrics import ACTIVITY_LATENCY

log = get_logger("chatee.activity")
_IDS = ("session_id", "turn_id", "step")


def _ids_of(args: Any) -> dict[str, Any]:
    """Session, turn and step ids from the activity's dataclass input, when it has them."""
    for arg in args:
        found = {k: getattr(arg, k) for k in _IDS if getattr(arg, k, None) is not None}
        if found:
            return found
    return {}


class _ObserveActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        context = {
            "activity": info.activity_type,
            "activity_id": info.activity_id,
            "attempt": info.attempt,
            "workflow_id": info.workflow_id,
            "task_queue": info.task_queue,
            **_ids_of(input.args),
        }
        outcome = "failed"
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(**context):
            try:
                result = await super().execute_activity(input)
                outcome = "completed"
                return result
            except (asyncio.CancelledError, CancelledError):
                outcome = "cancelled"
                raise
            finally:
                elapsed = time.perf_counter() - started
                ACTIVITY_LATENCY.labels(info.activity_type, info.task_queue, outcome).observe(
                    elapsed
                )
                log.info("activity finished", outcome=outcome, ms=round(elapsed * 1000, 1))


class ObserveActivities(Interceptor):
    """Worker interceptor: metrics and log context for every activity this worker runs."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ObserveActivity(next)
