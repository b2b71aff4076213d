"""Every error leaves as `application/problem+json` (RFC 9457) — never a stack trace."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from chatee.errors import ChateeError, Unavailable
from chatee.logging import get_logger
from chatee.redis import REDIS_ERRORS

log = get_logger(__name__)
PROBLEM = "application/problem+json"


def _slug(status: int) -> str:
    return "/problems/" + HTTPStatus(status).phrase.lower().replace(" ", "-")


def problem_response(
    status: int,
    detail: str,
    type_: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": type_ or _slug(status),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    # the request id bound by api.middleware.RequestContext, so a report can be matched to logs
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id is not None:
        body["request_id"] = request_id
        headers = {**(headers or {}), "X-Request-ID": request_id}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def domain_response(exc: ChateeError) -> JSONResponse:
    """A domain error as problem+json: the one place the core's errors meet HTTP. A 422 has
    `errors` like a request that failed validation, so clients read both the same way."""
    headers = None
    if exc.status == 503:
        headers = {"Retry-After": "2"}  # every 503 is transient
    elif exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    extra = dict(exc.extra)
    if exc.status == 422 and "errors" not in extra:
        extra["errors"] = [domain_error_item(exc.detail, exc.code, extra.pop("field", None))]
    return problem_response(exc.status, exc.detail, f"/problems/{exc.code}", headers, **extra)


_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): (.+)$", re.S)


def domain_error_item(detail: str, code: str, field: str | None) -> dict[str, Any]:
    """One `errors` item for a domain 422: its field is `field`, or the `name: ` the detail
    starts with ("mcp_servers: no MCP server of yours…" → loc `["mcp_servers"]`)."""
    message = detail
    if field is None and (match := _FIELD_PREFIX.match(detail)):
        field, message = match.group(1), match.group(2)
    # the core does not know whether a field came in the body or the query: loc names it alone
    return {"loc": field.split(".") if field else [], "msg": message, "type": code}


def _json_position(doc: Any, pos: Any) -> str:
    """Where in a body JSON parsing stopped, in words: "line 1, column 12"."""
    if not isinstance(doc, str) or not isinstance(pos, int):
        return "an unknown position"
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# Driver / connection exceptions that mean "a dependency is away", not "a bug": answered 503.
_TRANSIENT_RPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
# a cluster failing over: no reachable node (not a RedisError), or a slot nobody serves yet
REDIS_AWAY = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterDownError,
    SlotNotCoveredError,
)


def dependency_down(exc: BaseException) -> str | None:
    """The dependency (database, Redis, Temporal) that an exception says is unreachable, or
    None for any other error. Follows the `raise ... from` chain: drivers wrap each other."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, REDIS_AWAY):
            return "Redis"
        if isinstance(current, PoolTimeoutError) or (
            isinstance(current, DBAPIError)
            and (
                current.connection_invalidated
                or isinstance(current, (OperationalError, InterfaceError))
            )
        ):
            return "database"
        if isinstance(current, RPCError) and current.status.name in _TRANSIENT_RPC:
            return "Temporal"
        current = current.__cause__ or current.__context__
    return None


def dependency_response(name: str) -> JSONResponse:
    return domain_response(Unavailable(name))


def problem_openapi(app: FastAPI) -> None:
    """Document problem+json on every operation: 422 (validation), any other 4XX, and 5XX
    (503 while a dependency is away), so the schema says what clients really receive."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = PROBLEM_SCHEMA
        problem = {"content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if path.startswith("/v1/"):  # OpenAI's error JSON: api/openai/errors.py
                    responses.pop("422", None)
                    continue
                responses["422"] = {"description": "Validation error", **problem}
                responses.setdefault("4XX", {"description": "Client error", **problem})
                responses.setdefault("5XX", {"description": "Server error, unavailable", **problem})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}


def install(app: FastAPI) -> None:
    problem_openapi(app)

    @app.exception_handler(ChateeError)
    async def _domain(_: Request, exc: ChateeError) -> JSONResponse:
        return domain_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        bad_json = next((e for e in raw if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            loc = bad_json.get("loc", ())
            where = _json_position(exc.body, loc[1] if len(loc) > 1 else None)
            why = (bad_json.get("ctx") or {}).get("error", "not JSON")
            detail = f"invalid JSON at {where}: {why}"
            errors = [{"loc": ["body"], "msg": detail, "type": "json_invalid"}]
            return problem_response(422, detail, "/problems/invalid-json", errors=errors)
        content_type = request.headers.get("content-type")
        if not _is_json(content_type) and any(
            tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in raw
        ):  # a body FastAPI did not parse: it was not declared JSON
            sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
            detail = f"the body must be JSON sent with Content-Type: application/json ({sent})"
            return problem_response(415, detail, "/problems/unsupported-media-type")
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in raw
        ]
        detail = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return problem_response(
            422, detail or "invalid request", "/problems/validation", errors=errors
        )

    async def _driver(request: Request, exc: Exception) -> JSONResponse:
        name = dependency_down(exc)
        if name is not None:
            log.warning("dependency unavailable", dependency=name, path=request.url.path)
            return dependency_response(name)
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "internal error; it has been logged")

    for kind in (*REDIS_ERRORS, SQLAlchemyError, RPCError, OSError):
        app.add_exception_handler(kind, _driver)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        name = dependency_down(exc)
        if name is not None:
            return dependency_response(name)
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "internal error; it has been logged")
