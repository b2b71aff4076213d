"""Helpers for tests that run real `chatee` processes and talk to them over HTTP/SSE.

The process launchers and the API user live in `chatee.devtools` (the benchmarks use them too);
they are re-exported here so tests import everything from one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chatee.devtools.api_client import Api
from chatee.devtools.llm_server import LLMServerThread
from chatee.devtools.processes import ChateeProcess, Stack, wait_http, wait_log

__all__ = [
    "Api",
    "ChateeProcess",
    "Stack",
    "completes",
    "killable_turn",
    "wait_http",
    "wait_log",
    "WHOLE_ANSWER",
]

WHOLE_ANSWER = "the whole answer"  # what a turn answers once its killed worker's step reruns


def completes(turn_id: str) -> Callable[[dict[str, Any]], bool]:
    """An `until` for `Api.events`: the end of that turn."""
    return lambda e: (
        e["event"] in ("turn.completed", "turn.failed") and e["data"]["turn_id"] == turn_id
    )


def killable_turn(
    isolated_stacks: Callable[[dict[str, str]], Stack], llm: LLMServerThread
) -> tuple[Stack, ChateeProcess, str]:
    """A stack whose worker a test is about to SIGKILL mid-turn: (the stack, that worker, the
    marker of the turn). A message containing the marker streams `part0 `… `part39 ` slowly
    (kill on `part2 `); the step's retry on a new worker answers `WHOLE_ANSWER`."""
    stack = isolated_stacks({"CHATEE_TEMPORAL__LLM_HEARTBEAT_SECONDS": "2"})
    worker = stack.start_worker()
    stack.start_api()
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"chunks": [f"part{i} " for i in range(40)], "chunk_delay_ms": 200},
            {"text": WHOLE_ANSWER},
        ],
    )
    return stack, worker, marker
