"""HTTP metrics: a latency histogram and request counter per route template, and
`GET /metrics`.

Pure ASGI so streamed responses (SSE) are timed to their last byte without being buffered.
Outermost middleware: the status is the one the client got, 500s from crashes included.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatee import metrics

router = APIRouter(include_in_schema=False)
UNMATCHED = "<unmatched>"  # 404s for arbitrary paths must not mint a label value each


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    """This API process's metrics in the Prometheus text format."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


def route_template(scope: Scope) -> str:
    """`/api/v1/sessions/{session_id}` rather than the concrete path (bounded cardinality).
    FastAPI puts the matched route in the scope; an included router's route may carry its
    own path only, so the router prefix is taken back from the concrete path's segments."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    if ":path}" in path:  # a catch-all parameter spans segments: keep the route's own path
        return path
    concrete = scope["path"].rstrip("/").split("/")
    own = path.rstrip("/").split("/")
    prefix = concrete[: max(0, len(concrete) - len(own) + 1)]  # both start with ""
    return "/".join(prefix) + path if len(prefix) > 1 else path


class Observe:
    """Times every HTTP request by route template, method and status. (Server spans come
    from FastAPI itself, which traces requests natively once chatee.tracing installs a tracer
    provider, `traceparent` included.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app dies before answering, the client sees the server's 500
        started = time.perf_counter()

        async def observe_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            labels = (route_template(scope), scope["method"], str(status))
            metrics.HTTP_REQUESTS.labels(*labels).inc()
            metrics.HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)
