"""Prometheus metrics from real processes: after a turn, the API's `GET /metrics` and the
worker's metrics port show what an operator would alert on.

The "observed" stack (API + all-queues worker in a Temporal namespace of its own, with worker
metrics, Temporal SDK metrics, JSON logs and file tracing all on) is shared with
tests/test_json_logs.py and tests/test_tracing.py: started once per session, stopped at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from websockets.asyncio.client import connect

from chatee.client import TurnCompleted
from chatee.devstack import free_port
from tests.support import Stack, new_session, signed_up, turn_events


async def register_namespace(client: Client, prefix: str) -> str:
    """A Temporal namespace of the test's own: its workers share no task queue with others."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    return name


@dataclass
class Observed:
    stack: Stack
    worker_metrics: str  # URL of the worker's /metrics
    temporal_metrics: str  # URL of the worker's Temporal SDK metrics
    traces: Path  # `{service}` → chatee-api / chatee-worker


_observed: Observed | None = None


async def observed_stack(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Observed:
    """The one observed stack of this test session (see the module docstring)."""
    global _observed
    if _observed is None:
        tmp = tmp_path_factory.mktemp("observed")
        worker_port, temporal_port = free_port(), free_port()
        traces = tmp / "traces-{service}.jsonl"
        env = {
            **stack_env,
            "CHATEE_TEMPORAL_NAMESPACE": await register_namespace(temporal_client, "observed"),
            "CHATEE_LOG_JSON": "true",
            "CHATEE_OBSERVABILITY__WORKER_METRICS_PORT": str(worker_port),
            "CHATEE_OBSERVABILITY__TEMPORAL_METRICS_PORT": str(temporal_port),
            "CHATEE_OBSERVABILITY__TRACING_EXPORTER": "file",
            "CHATEE_OBSERVABILITY__TRACING_FILE": str(traces),
        }
        stack = Stack(env=env, tmp=tmp)
        request.config.add_cleanup(stack.stop)
        stack.start_worker()
        stack.start_api()
        _observed = Observed(
            stack,
            f"http://127.0.0.1:{worker_port}/metrics",
            f"http://127.0.0.1:{temporal_port}/metrics",
            traces,
        )
    return _observed


@pytest.fixture(scope="module")
async def observed(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Observed:
    return await observed_stack(request, stack_env, temporal_client, tmp_path_factory)


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_a_turn_shows_in_api_and_worker_metrics(observed: Observed) -> None:
    async with (
        httpx.AsyncClient(base_url=observed.stack.base, timeout=30) as http,
        await signed_up(observed.stack.base) as chatee,
    ):
        session = await new_session(chatee)
        before_api = await scrape(http, "/metrics")
        before_worker = await scrape(http, observed.worker_metrics)

        events = await turn_events(chatee, session.id, "how many tokens is this?")
        assert isinstance(events[-1], TurnCompleted)

        route = {"route": "/api/v1/chat/stream", "method": "POST", "status": "200"}
        counted = "chatee_http_requests_total"
        # a streamed response is counted once its last byte is sent: poll a little
        for _ in range(50):
            api = await scrape(http, "/metrics")
            if value(api, counted, **route) > value(before_api, counted, **route):
                break
            await asyncio.sleep(0.1)
        assert value(api, counted, **route) == value(before_api, counted, **route) + 1
        assert value(api, "chatee_http_request_duration_seconds_count", **route) >= 1
        # a concrete path never becomes a label: the template does
        assert value(api, counted, route="/api/v1/sessions", method="POST", status="201") >= 1
        assert f"/api/v1/sessions/{session.id}" not in api

        # the turn is recorded by an activity on the worker; the scrape may race its finish
        for _ in range(50):
            worker = await scrape(http, observed.worker_metrics)
            turns = value(worker, "chatee_turns_total", outcome="completed")
            if turns > value(before_worker, "chatee_turns_total", outcome="completed"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no completed turn counted:\n{worker}")
        generate = {"activity": "GenerateReply", "outcome": "completed"}
        samples = "chatee_activity_duration_seconds_count"
        assert value(worker, samples, **generate) > value(before_worker, samples, **generate)
        assert value(worker, samples, activity="GenerateReply", task_queue="chatee-llm") >= 1
        tokens = {"provider": "openai", "model": "scripted"}
        for kind in ("prompt", "completion"):
            used = value(worker, "chatee_llm_tokens_total", kind=kind, **tokens)
            assert used > value(before_worker, "chatee_llm_tokens_total", kind=kind, **tokens)
        assert value(worker, "chatee_llm_request_duration_seconds_count", **tokens) >= 1
        # the API process runs no activity: its registry stays free of worker series
        assert value(api, samples, activity="GenerateReply") == 0

        sdk = await scrape(http, observed.temporal_metrics)
        assert "temporal_" in sdk


async def test_websocket_gauge_and_inline_fanout_lag(observed: Observed) -> None:
    async with (
        httpx.AsyncClient(base_url=observed.stack.base, timeout=30) as http,
        await signed_up(observed.stack.base) as alice,
        await signed_up(observed.stack.base) as bob,
    ):
        assert bob.tokens is not None
        ws_url = observed.stack.base.replace("http", "ws") + f"/ws?token={bob.tokens.access_token}"
        lag = "chatee_fanout_lag_seconds_count"
        before = value(await scrape(http, "/metrics"), lag, path="inline")
        async with connect(ws_url) as ws:
            await ws.send('{"type": "ping"}')
            await ws.recv()  # attached: the pong comes after
            text = await scrape(http, "/metrics")
            assert value(text, "chatee_websocket_connections") >= 1
            open_now = value(text, "chatee_websocket_connections")

            chat = await alice.create_conversation("private", [bob.user_id])
            await alice.send_message(chat.id, "hi bob")
            assert value(await scrape(http, "/metrics"), lag, path="inline") > before
        for _ in range(50):  # the server notices the close on its own time
            closed = value(await scrape(http, "/metrics"), "chatee_websocket_connections")
            if closed == open_now - 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the gauge stayed at {closed} after the socket closed")


async def test_metrics_is_not_in_the_openapi_schema(observed: Observed) -> None:
    async with httpx.AsyncClient(base_url=observed.stack.base, timeout=30) as http:
        schema = (await http.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
