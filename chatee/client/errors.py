"""What the SDK raises: every API error (`application/problem+json`) as one typed exception."""

from __future__ import annotations

from typing import Any

import httpx


class ChateeClientError(Exception):
    """Base of everything the SDK raises on purpose."""


class ApiError(ChateeClientError):
    """An error answer from the API. `code` is the last part of the problem `type`
    (`not-found`, `session-busy`, `invalid`, …); `body` is the whole problem document."""

    def __init__(
        self, status: int, code: str, detail: str, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}
        self.retry_after: float | None = None  # seconds, from a `Retry-After` header

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The problem document of a response, whatever its shape; never raises itself."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": response.text[:500] or response.reason_phrase}
        problem_type = str(body.get("type") or "")
        code = problem_type.rsplit("/", 1)[-1] if problem_type else _slug(response)
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        error = _BY_STATUS.get(response.status_code, ApiError)(
            response.status_code, code, detail, body
        )
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            error.retry_after = float(retry_after)
        return error


class Unauthorized(ApiError):
    """401: not signed in, or the login ended (refresh token spent, revoked or expired)."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: missing, or someone else's."""


class Conflict(ApiError):
    """409: e.g. a busy session (`session-busy`) or a closed one."""


class Invalid(ApiError):
    """400 or 422: the request was refused as it stands."""


class RateLimited(ApiError):
    """429: wait `retry_after` seconds."""


class Unavailable(ApiError):
    """502/503/504: try again shortly."""


class StreamLost(ChateeClientError):
    """A turn's stream could not be resumed before the SDK's resume deadline."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def _slug(response: httpx.Response) -> str:
    return response.reason_phrase.lower().replace(" ", "-") or str(response.status_code)


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of a non-2xx answer (the body must have been read)."""
    if response.status_code >= 400:
        raise ApiError.from_response(response)
