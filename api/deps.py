"""FastAPI dependencies: shared resources, DB sessions, the authenticated caller.

A caller is a user holding an access token (every scope) or a service holding an API key
(`chk_…`, only its scopes). Both come as `Authorization: Bearer …`; revoked access tokens
(logout, a reused refresh token) and revoked keys are refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from api.ratelimit import limit_user_writes
from chatee.errors import Forbidden, Unauthorized, Unavailable
from chatee.ids import parse_id as parse_id  # routers take it from here
from chatee.logging import get_logger
from chatee.messaging.service import Messenger
from chatee.models import ApiKey, utcnow
from chatee.redis import REDIS_ERRORS, get_many
from chatee.security import (
    API_KEY_PREFIX,
    READ_METHODS,
    SCOPE_GROUPS,
    AccessClaims,
    InvalidToken,
    decode_access_token,
    deny_keys,
    hash_secret,
    pepper,
    scope_allows,
)
from chatee.services import Services

log = get_logger(__name__)
LAST_USED_EVERY = timedelta(seconds=60)  # an API key's last_used_at is written at most this often


def services(request: Request) -> Services:
    """The process's services, built once by the app's lifespan (chatee/services.py)."""
    return request.app.state.services


async def db_session(svc: Annotated[Services, Depends(services)]) -> AsyncIterator[AsyncSession]:
    async with svc.sessionmaker() as session:
        yield session


async def read_session(svc: Annotated[Services, Depends(services)]) -> AsyncIterator[AsyncSession]:
    """The read replica when one is configured: only for reads that tolerate lag."""
    async with svc.reader() as session:
        yield session


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's access token, or one of a user's API keys."""

    user_id: int
    kind: Literal["user", "api_key"]
    claims: AccessClaims | None = None
    key_id: int | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    def allows(self, group: str | None, write: bool) -> bool:
        if self.kind == "user":
            return True
        return group is not None and scope_allows(self.scopes, group, write)


async def authenticate(svc: Services, token: str) -> Principal | None:
    """The caller behind a bearer token, or None when it is invalid, expired or revoked."""
    if token.startswith(API_KEY_PREFIX):
        return await _api_key(svc, token)
    assert svc.settings.jwt_secret is not None
    try:
        claims = decode_access_token(token, svc.settings.jwt_secret.get_secret_value())
    except InvalidToken:
        return None
    keys = deny_keys(claims)
    if keys:
        try:
            if await svc.redis.exists(*keys):
                return None
        except REDIS_ERRORS:  # cannot tell whether it was revoked: refuse to guess
            raise Unavailable("Redis") from None
    return Principal(claims.user_id, "user", claims=claims)


async def _api_key(svc: Services, token: str) -> Principal | None:
    digest = hash_secret(token, pepper(svc.settings))
    try:
        async with svc.sessionmaker() as db:
            key = await db.scalar(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
            if key is None:
                return None
            now = utcnow()
            if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
                await db.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
                await db.commit()
    except SQLAlchemyError:
        raise Unavailable("the database") from None
    return Principal(key.user_id, "api_key", key_id=key.id, scopes=frozenset(key.scopes or ()))


async def revoked(svc: Services, principals: Sequence[Principal]) -> list[bool]:
    """Which of these callers' credentials have been revoked since they were checked: for the
    streams that stay open (WebSocket, SSE), re-checked now and then. One MGET for every
    token's deny-list keys (one per slot on a cluster), one query for API keys. When Redis or
    the database cannot be asked, nothing is reported revoked: a dependency blip must not drop
    every open stream."""
    keys: list[list[str]] = [deny_keys(p.claims) if p.claims else [] for p in principals]
    flat = [key for ks in keys for key in ks]
    key_ids = {p.key_id for p in principals if p.key_id is not None}
    try:
        hits = dict(zip(flat, await get_many(svc.redis, flat), strict=True))
        gone: set[int] = set()
        if key_ids:
            async with svc.sessionmaker() as db:
                gone = set(
                    (
                        await db.scalars(
                            select(ApiKey.id).where(
                                ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_not(None)
                            )
                        )
                    ).all()
                )
    except (*REDIS_ERRORS, SQLAlchemyError) as exc:
        log.warning("could not re-check open streams' tokens", error=type(exc).__name__)
        return [False] * len(principals)
    return [
        any(hits.get(k) for k in ks) or (p.key_id is not None and p.key_id in gone)
        for p, ks in zip(principals, keys, strict=True)
    ]


def route_group(path: str) -> str | None:
    """The scope group of an /api/v1 path (`/api/v1/agents/1` → `agents`); None: keys never."""
    parts = path.split("/")
    if len(parts) < 4 or parts[1:3] != ["api", "v1"]:
        return None
    return SCOPE_GROUPS.get(parts[3])


_bearer = HTTPBearer(
    auto_error=False, description="access token from /auth/login, or an API key (chk_…)"
)
_openai_bearer = HTTPBearer(auto_error=False, description="access token or API key (chk_…, `chat`)")


async def current_principal(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer token")
    principal = await authenticate(svc, credentials.credentials)
    if principal is None:
        raise Unauthorized("invalid, expired or revoked token")
    return await admit(request, svc, principal, route_group(request.url.path))


async def openai_caller(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_openai_bearer)],
) -> Principal:
    """The caller of `/v1`: the same bearer, which needs the `chat` scope, refused in OpenAI's
    words (rendered by api/openai/errors.py)."""
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
    return await admit(request, svc, principal, "chat")


async def chat_caller(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a route outside /chat that runs agent turns (AG-UI): the same bearer,
    and an API key needs the `chat` scope whatever the path."""
    if credentials is None:
        raise Unauthorized("missing bearer token")
    principal = await authenticate(svc, credentials.credentials)
    if principal is None:
        raise Unauthorized("invalid, expired or revoked token")
    return await admit(request, svc, principal, "chat")


async def admit(
    request: Request, svc: Services, principal: Principal, group: str | None
) -> Principal:
    """What every authenticated HTTP caller passes: an API key's scopes cover the request
    (`group`, read or write), and a write spends the per-user budget. The principal is noted
    for the access log."""
    write = request.method not in READ_METHODS
    if not principal.allows(group, write):
        raise Forbidden("this API key's scopes do not cover this request", "insufficient-scope")
    if write:
        await limit_user_writes(request.app, svc, principal.user_id)
    request.state.principal = principal
    return principal


def current_user_id(principal: Annotated[Principal, Depends(current_principal)]) -> int:
    return principal.user_id


Svc = Annotated[Services, Depends(services)]


def messenger(svc: Svc) -> Messenger:
    return svc.messenger


Msg = Annotated[Messenger, Depends(messenger)]
DB = Annotated[AsyncSession, Depends(db_session)]
ReadDB = Annotated[AsyncSession, Depends(read_session)]  # listings, history pages, search
Caller = Annotated[Principal, Depends(current_principal)]
OpenAICaller = Annotated[Principal, Depends(openai_caller)]
ChatCaller = Annotated[Principal, Depends(chat_caller)]  # runs turns: the `chat` scope
SESSION_HEADER = "X-Chatee-Session-Id"  # the session an OpenAI-compatible call runs in
SessionHeader = Annotated[str | None, Header(alias=SESSION_HEADER)]
UserId = Annotated[int, Depends(current_user_id)]
