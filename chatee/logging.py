"""Structured logs (structlog) with secrets scrubbed from every event before it is written."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(password|secret|token|api_key|authorization|cookie)", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)")
# credentials in a query string, e.g. uvicorn's "WebSocket /ws?token=<jwt>" line
_QUERY_SECRET = re.compile(r"([?&](?:token|access_token|api_key|key|password)=)[^&\s\"']+", re.I)
# a provider's API key echoed back in its error (OpenAI, DeepSeek, Anthropic keys start "sk-")
_PROVIDER_KEY = re.compile(r"\b(sk-)[A-Za-z0-9_\-]{16,}")
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it shows up in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def scrub(text: str) -> str:
    text = _BEARER.sub(r"\1***", text)
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    text = _PROVIDER_KEY.sub(r"\1***", text)
    for secret in _known_secrets:
        text = text.replace(secret, "***")
    return text


def _scrub_event(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and value is not None:
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = scrub(value)
    return event


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.getMessage())
            record.args = None
        return True


def setup_logging(level: str = "info", json: bool = False) -> None:
    """structlog for our own lines and stdlib logging (uvicorn, temporalio, warnings) alike,
    through one ProcessorFormatter on stderr: with `json`, one JSON object per line carrying
    the bound context (`request_id`, `turn_id`…); else the console renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub_event,
            structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ScrubFilter())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # `warnings` go through the same handler, not raw stderr
    noisy_loggers = ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "mcp", "aiosqlite")
    for noisy in (*noisy_loggers, "temporalio.activity"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
