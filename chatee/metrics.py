"""Prometheus metrics shared by the API and the workers (prometheus_client's default registry).

Every process exposes only what it does: the API serves `GET /metrics`, a worker serves its
own registry on `observability.worker_metrics_port`. Names are listed in README
"Observability". Label values are bounded (route templates, activity types, providers and
models an operator configured), never ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from chatee.ids import timestamp_ms
from chatee.tracing import span

# seconds; LLM-bound activities and streaming requests run for tens of seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "chatee_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "chatee_http_request_duration_seconds",
    "Time to the end of the response (whole stream for SSE), by route template and method",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
WS_CONNECTIONS = Gauge(
    "chatee_websocket_connections", "WebSocket connections open on this API process"
)
TURNS = Counter(
    "chatee_turns_total",
    "Agent turns recorded, by outcome (completed, failed, cancelled, interrupted, rolled_back)",
    ["outcome"],
)
ACTIVITY_LATENCY = Histogram(
    "chatee_activity_duration_seconds",
    "Activity attempts, by activity type, task queue and outcome (completed, failed, cancelled)",
    ["activity", "task_queue", "outcome"],
    buckets=LATENCY_BUCKETS,
)
FANOUT_LAG = Histogram(
    "chatee_fanout_lag_seconds",
    "From a conversation message being stored to its inbox entries being written, by path",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
LLM_TOKENS = Counter(
    "chatee_llm_tokens_total",
    "LLM tokens used, by provider, model and kind (prompt, completion)",
    ["provider", "model", "kind"],
)
LLM_LATENCY = Histogram(
    "chatee_llm_request_duration_seconds",
    "One LLM request (a whole stream), by provider, model and outcome",
    ["provider", "model", "outcome"],
    buckets=LATENCY_BUCKETS,
)


@contextmanager
def observe_llm(provider: str, model: str, **ids: Any) -> Iterator[None]:
    """One LLM request: an `llm.chat` span (child of the activity's) and a latency sample."""
    outcome = "failed"
    started = time.perf_counter()
    try:
        with span("llm.chat", **{"llm.provider": provider, "llm.model": model}, **ids):
            yield
        outcome = "completed"
    finally:
        LLM_LATENCY.labels(provider, model, outcome).observe(time.perf_counter() - started)


def record_tokens(provider: str, model: str, usage: Mapping[str, int] | None) -> None:
    for kind in ("prompt", "completion"):
        count = (usage or {}).get(f"{kind}_tokens") or 0
        if count > 0:
            LLM_TOKENS.labels(provider, model, kind).inc(count)


def record_fanout(message_id: int, path: str) -> None:
    """Lag of one delivery: the message's id was minted (snowflake milliseconds: stored rows
    keep whole seconds only) → its inbox entries written (now)."""
    lag_ms = time.time_ns() // 1_000_000 - timestamp_ms(message_id)
    FANOUT_LAG.labels(path).observe(max(0, lag_ms) / 1000)


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on its own thread (worker processes have no HTTP server otherwise)."""
    start_http_server(port, addr=host)
