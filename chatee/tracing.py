"""OpenTelemetry tracing: one tracer provider per process, Temporal's TracingInterceptor on the
client (and so on the workers built from it), spans for the LLM and MCP calls.

The exporter is chosen by `observability.tracing_exporter`: `none` (default: no provider is
installed and every span is a no-op), `console` (one JSON span per line on stdout), `file`
(the same, appended to `observability.tracing_file`) or `otlp` (needs the
`opentelemetry-exporter-otlp-proto-http` package). Trace context crosses processes as W3C
`traceparent`: HTTP headers into the API, Temporal headers into workflows and activities.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span

from chatee.config import ConfigError, Settings

TRACER_NAME = "chatee"
_configured = False


class JsonLinesExporter(SpanExporter):
    """Each finished span as one line of JSON (OpenTelemetry's own span JSON, compacted)."""

    def __init__(self, out: IO[str], close: bool = False) -> None:
        self.out = out
        self._close = close
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock:
            self.out.write(lines)
            self.out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._close:
            self.out.close()


def _exporter(settings: Settings, service: str) -> tuple[SpanExporter, bool] | None:
    """The configured exporter and whether it wants batching; None for `none`."""
    knobs = settings.observability
    if knobs.tracing_exporter == "none":
        return None
    if knobs.tracing_exporter == "console":
        return JsonLinesExporter(sys.stdout), False
    if knobs.tracing_exporter == "file":
        if knobs.tracing_file is None:
            raise ConfigError("observability.tracing_file must be set for the `file` exporter")
        # `{service}` in the path: one file per kind of process (chatee-api, chatee-worker)
        path = Path(str(knobs.tracing_file).replace("{service}", knobs.service_name or service))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JsonLinesExporter(path.open("a", encoding="utf-8"), close=True), False
    try:  # otlp
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore
            OTLPSpanExporter,
        )
    except ImportError:
        raise ConfigError(
            "the otlp trace exporter needs `pip install opentelemetry-exporter-otlp-proto-http`"
        ) from None
    return OTLPSpanExporter(endpoint=knobs.otlp_endpoint), True


def setup_tracing(settings: Settings, service: str) -> None:
    """Install the process's tracer provider (once). With no exporter, nothing is installed."""
    global _configured
    exporter = _exporter(settings, service)
    if exporter is None or _configured:
        return
    knobs = settings.observability
    provider = TracerProvider(
        resource=Resource.create({"service.name": knobs.service_name or service}),
        sampler=ParentBased(TraceIdRatioBased(knobs.trace_sample_ratio)),
    )
    span_exporter, batch = exporter
    processor = BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _configured = True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def temporal_interceptors(settings: Settings) -> list[Any]:
    """Temporal's tracing interceptor when tracing is on: client spans (StartWorkflow,
    UpdateWorkflow…) and, on workers built from that client, RunWorkflow/HandleUpdate/
    StartActivity/RunActivity spans carried across in Temporal headers."""
    if settings.observability.tracing_exporter == "none":
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer())]


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of whatever is current (an exception is recorded on it and re-raised)."""
    clean = {k: v for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(name, attributes=clean) as current:
        yield current
