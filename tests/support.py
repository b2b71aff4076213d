"""Helpers for tests that run real `chatee` processes and talk to them over HTTP/SSE.

The process launchers and the API user live in `chatee.devtools` (the benchmarks use them too);
they are re-exported here so tests import everything from one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatee.devtools.api_client import Api
from chatee.devtools.processes import ChateeProcess, Stack, wait_http, wait_log

__all__ = ["Api", "ChateeProcess", "Stack", "completes", "wait_http", "wait_log"]


def completes(turn_id: str) -> Callable[[dict[str, Any]], bool]:
    """An `until` for `Api.events`: the end of that turn."""
    return lambda e: (
        e["event"] in ("turn.completed", "turn.failed") and e["data"]["turn_id"] == turn_id
    )
