"""Every error leaves as `application/problem+json` (RFC 9457) — never a stack trace."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from chatee.errors import ChateeError, Unavailable
from chatee.logging import get_logger

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
    """A domain error as problem+json: the one place the core's errors meet HTTP."""
    headers = None
    if exc.status == 503:
        headers = {"Retry-After": "2"}  # every 503 is transient
    elif exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return problem_response(exc.status, exc.detail, f"/problems/{exc.code}", headers, **exc.extra)


# Driver / connection exceptions that mean "a dependency is away", not "a bug": answered 503.
_TRANSIENT_RPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def dependency_down(exc: BaseException) -> str | None:
    """The dependency (database, Redis, Temporal) that an exception says is unreachable, or
    None for any other error. Follows the `raise ... from` chain: drivers wrap each other."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (RedisConnectionError, RedisTimeoutError)):
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
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
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

    for kind in (RedisError, SQLAlchemyError, RPCError, OSError):
        app.add_exception_handler(kind, _driver)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        name = dependency_down(exc)
        if name is not None:
            return dependency_response(name)
        log.exception("unhandled error", path=request.url.path)
        return problem_response(500, "internal error; it has been logged")
