"""Errors on /v1 in OpenAI's shape, rendered in this one place.

OpenAI clients branch on the status and on `{"error": {"message", "type", "code", "param"}}`
(the `openai` SDK raises `AuthenticationError` for 401, `NotFoundError` for 404, …), so nothing
under /v1 may leave as problem+json. Every /v1 route is an `OpenAIRoute`, which renders whatever
its handler raises — a domain error, an HTTP exception, FastAPI's validation error, a dependency
that is away — before the app's problem+json handlers could see it; `unknown` answers every
other /v1 path.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.errors import dependency_down
from chatee.errors import ChateeError, NotFound
from chatee.logging import get_logger

log = get_logger(__name__)

# status → OpenAI's error type (and default code)
TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "insufficient_scope"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "code", "param"],
        }
    },
    "required": ["error"],
}
_ERROR = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
# what every /v1 operation documents (api/errors.py leaves these paths to us)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "OpenAI error (400 for any invalid request)", **_ERROR},
    "5XX": {"description": "OpenAI error (503 while a dependency is away)", **_ERROR},
}


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    type_, default_code = TYPES.get(status, ("server_error" if status >= 500 else "", None))
    error = {
        "message": message,
        "type": type_ or "invalid_request_error",
        "code": code or default_code,
        "param": param,
    }
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def no_retry() -> dict[str, str]:
    """The `openai` SDK retries 409, 429 and 5xx unless told not to: a retried chat call would
    run its turn again, so refusals that a retry cannot fix say so."""
    return {"x-should-retry": "false"}


def render(request: Request, exc: Exception) -> JSONResponse:
    """Any exception raised under /v1 as OpenAI's error JSON."""
    if isinstance(exc, ChateeError):
        return _domain(exc)
    if isinstance(exc, RequestValidationError):
        return _invalid(exc)
    if isinstance(exc, HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return error_response(exc.status_code, detail, headers=headers or None)
    name = dependency_down(exc)
    if name is not None:
        log.warning("dependency unavailable", dependency=name, path=request.url.path)
        message = f"{name} is unavailable right now; retry shortly"
        return error_response(503, message, headers={"Retry-After": "2"})
    log.exception("unhandled error", path=request.url.path)
    return error_response(500, "internal error; it has been logged", "internal_error")


def _domain(exc: ChateeError) -> JSONResponse:
    status = 400 if exc.status == 422 else exc.status  # OpenAI says 400 for every bad request
    generic = ("validation", "not-found", "unauthorized", "insufficient-scope")
    code = exc.code if exc.code not in generic else None  # OpenAI's own code for the status
    headers = {"Retry-After": "2"} if status == 503 else None
    if status == 409 or exc.code == "turn-unconfirmed":
        headers = {**(headers or {}), **no_retry()}
    param = exc.extra.get("param")
    return error_response(
        status, exc.detail, code, param if isinstance(param, str) else None, headers
    )


def _invalid(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 as OpenAI's 400: the first problem, with the field it is about."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())][1:]  # drop "body" / "query"
    param = _param(loc)
    message = first.get("msg", "invalid request")
    return error_response(
        400, f"{param}: {message}" if param else message, "invalid_value", param or None
    )


def _param(loc: list[str]) -> str:
    """`['messages', '0', 'content']` → `messages[0].content`, as OpenAI names params."""
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class OpenAIRoute(APIRoute):
    """A /v1 route: whatever its handler (or its dependencies, or body parsing) raises leaves
    as OpenAI's error JSON."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - this is the surface's one error renderer
                return render(request, exc)

        return openai_errors


unknown = APIRouter(route_class=OpenAIRoute, responses=ERROR_RESPONSES)


@unknown.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown_url(request: Request, path: str) -> None:
    """Any other /v1 path, answered as OpenAI does."""
    raise NotFound(f"Invalid URL ({request.method} /v1/{path})", "unknown_url")
