"""`CHATEE_LOG_JSON=true`: every line either process writes is one JSON object — our own lines,
uvicorn's and temporalio's alike — and the lines carry the ids an operator greps for:
`request_id` on the API, `turn_id`/`workflow_id`/`activity` on the worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from httpx_sse import aconnect_sse

from tests.support import new_session, signed_up
from tests.test_metrics import Observed, observed  # noqa: F401  (the shared observed stack)


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


async def test_every_line_is_json_and_carries_request_and_turn_ids(
    observed: Observed,  # noqa: F811
) -> None:
    api_proc, worker_proc = (
        next(p for p in observed.stack.processes if p.argv[0] == kind) for kind in ("api", "worker")
    )
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    async with await signed_up(observed.stack.base) as chatee:
        session = await new_session(chatee)
        # the raw stream, on the SDK's connection and login: the test reads a response header
        body = {"session_id": session.id, "content": "log this turn"}
        async with aconnect_sse(
            chatee.http,
            "POST",
            "/api/v1/chat/stream",
            json=body,
            headers={"X-Request-ID": request_id},
            auth=chatee.auth,
        ) as source:
            assert source.response.headers["x-request-id"] == request_id
            events = [sse async for sse in source.aiter_sse() if sse.data]
    assert events[-1].event == "turn.completed"
    turn_id = json.loads(events[-1].data)["turn_id"]

    for _ in range(50):  # the worker logs an activity's end just after it reports it
        worker = json_lines(worker_proc.log())
        finish = [r for r in worker if r.get("turn_id") == turn_id and r.get("activity")]
        if {"GenerateReply", "FinishTurn"} & {r["activity"] for r in finish}:
            break
        await asyncio.sleep(0.1)
    for _ in range(50):  # the API logs a request once its response has ended
        api = json_lines(api_proc.log())
        request_lines = [r for r in api if r.get("request_id") == request_id]
        if any(r["event"] == "http request" for r in request_lines):
            break
        await asyncio.sleep(0.1)

    # the API: uvicorn's own start-up lines went through the same formatter
    assert any(r.get("logger", "").startswith("uvicorn") for r in api), api[:5]
    assert any(r["event"] == "http request" and r["path"] == "/api/v1/chat/stream"
               for r in request_lines), request_lines  # fmt: skip
    assert all({"event", "level", "timestamp"} <= r.keys() for r in api)

    # the worker: the turn's activity lines carry the turn, its session and its workflow
    generate = [r for r in finish if r["activity"] == "GenerateReply"]
    assert generate, finish
    line = generate[0]
    assert line["session_id"] == session.id
    assert line["workflow_id"] == session.workflow_id
    assert line["task_queue"] == "chatee-llm"
    assert line["outcome"] == "completed"
    assert all({"event", "level", "timestamp"} <= r.keys() for r in worker)
