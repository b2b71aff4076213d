"""Who calls /v1: the same bearer as the REST API (an access token, or an API key with the
`chat` scope), refused in OpenAI's words."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import Principal, Svc, authenticate
from api.ratelimit import limit_user_writes
from chatee.errors import Forbidden, Unauthorized
from chatee.security import READ_METHODS

SESSION_HEADER = "X-Chatee-Session-Id"

_bearer = HTTPBearer(auto_error=False, description="access token or API key (chk_…, `chat`)")


async def openai_caller(
    request: Request,
    svc: Svc,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized(
            "You didn't provide an API key: send an access token or a Chatee API key as "
            "`Authorization: Bearer …`.",
            "invalid_api_key",
        )
    principal = await authenticate(svc, credentials.credentials)
    if principal is None:
        raise Unauthorized(
            "Incorrect API key provided (invalid, expired or revoked).", "invalid_api_key"
        )
    write = request.method not in READ_METHODS
    if not principal.allows("chat", write):
        raise Forbidden("This API key's scopes do not include `chat`.", "insufficient_scope")
    if write:
        await limit_user_writes(request.app, svc, principal.user_id)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(openai_caller)]
SessionHeader = Annotated[str | None, Header(alias=SESSION_HEADER)]
