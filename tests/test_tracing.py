"""OpenTelemetry tracing across processes: a client's W3C `traceparent` carries one trace from
the API request, through Temporal (client → workflow → activity headers), to the LLM call on
the worker. Spans are read back from the `file` exporter output of both processes."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from chatee.client import TurnCompleted
from tests.support import signed_up
from tests.test_metrics import Observed, observed  # noqa: F401  (the shared observed stack)


def spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [s for s in found if s["context"]["trace_id"] == f"0x{trace_id}"]


async def test_one_turn_is_one_trace_from_request_to_llm_call(
    observed: Observed,  # noqa: F811
) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    async with await signed_up(observed.stack.base) as chatee:
        agent = await chatee.create_agent(
            "helper", system_prompt="You are helpful.", model="scripted"
        )
        chatee.http.headers.update(traceparent)  # from here on, requests carry the client's trace
        session = await chatee.create_session(agent.id)
        turn = await chatee.stream_turn(session.id, "trace me").run()
    assert isinstance(turn.final, TurnCompleted)
    turn_id = turn.final.turn_id

    api_file = Path(str(observed.traces).replace("{service}", "chatee-api"))
    worker_file = Path(str(observed.traces).replace("{service}", "chatee-worker"))
    wanted_api = {
        "POST /api/v1/sessions",
        "StartWorkflow:AgentSession",
        "POST /api/v1/chat/stream",
        "StartWorkflowUpdate:send_message",
    }
    wanted_worker = {
        "RunWorkflow:AgentSession",
        "HandleUpdate:send_message",
        "StartActivity:GenerateReply",
        "RunActivity:GenerateReply",
        "llm.chat",
    }
    for _ in range(50):  # spans are written as they end: the server's last ones may trail
        api_spans, worker_spans = spans(api_file, trace_id), spans(worker_file, trace_id)
        api_names = {s["name"] for s in api_spans}
        worker_names = {s["name"] for s in worker_spans}
        if wanted_api <= api_names and wanted_worker <= worker_names:
            break
        await asyncio.sleep(0.1)
    assert wanted_api <= api_names, sorted(api_names)
    assert wanted_worker <= worker_names, sorted(worker_names)
    assert {s["resource"]["attributes"]["service.name"] for s in api_spans} == {"chatee-api"}
    assert {s["resource"]["attributes"]["service.name"] for s in worker_spans} == {"chatee-worker"}

    # the LLM call is a child of the activity that made it, and says which turn it served
    by_name = {s["name"]: s for s in worker_spans}
    llm = by_name["llm.chat"]
    assert llm["parent_id"] == by_name["RunActivity:GenerateReply"]["context"]["span_id"]
    assert llm["attributes"]["turn_id"] == turn_id
    assert llm["attributes"]["llm.provider"] == "openai"
    assert llm["attributes"]["llm.model"] == "scripted"
    # the API's server span took the client's trace as its parent
    server = next(s for s in api_spans if s["name"] == "POST /api/v1/chat/stream")
    assert server["kind"] == "SpanKind.SERVER"
    assert server["parent_id"] is not None
