"""Register, log in, refresh, log out.

A login is a refresh-token *family*: register/login start one and answer with a short-lived
access token (`token`, a JWT) and a refresh token. `POST /auth/refresh` trades a refresh token
for a new pair, once: the old one is spent. Presenting a spent one again means it was copied,
so the whole family is revoked — its refresh tokens in the database, its access tokens through
a Redis deny-list entry that outlives them. `POST /auth/logout` does the same for the caller's
login and puts the access token itself on the deny-list until it expires.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy import select, update

from api.deps import DB, REVOKED_FAMILY, REVOKED_JTI, Caller, Res, pepper, unauthorized
from api.errors import Problem, unavailable
from api.schemas import AuthResult, Credentials
from chatee import store
from chatee.ids import new_id
from chatee.logging import get_logger
from chatee.models import RefreshToken, utcnow
from chatee.security import (
    REFRESH_PREFIX,
    hash_password,
    hash_secret,
    issue_access_token,
    new_secret,
    verify_password,
)

log = get_logger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])
_DUMMY_HASH = hash_password("not a real password")


class TokenPair(AuthResult):
    """`token` is the access token (bearer); trade `refresh_token` for a new pair before
    `expires_in` seconds are up."""

    refresh_token: str
    expires_in: int = Field(description="seconds until `token` expires")


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str | None = Field(
        None, max_length=256, description="also revoke this login (default: the caller's)"
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: Credentials, db: DB, res: Res) -> TokenPair:
    try:
        user = await store.create_user(
            db, body.username, await asyncio.to_thread(hash_password, body.password)
        )
    except store.UsernameTaken:
        raise Problem(409, "that username is taken", "/problems/username-taken") from None
    return await _new_login(db, res, user.id)


@router.post("/login")
async def login(body: Credentials, db: DB, res: Res) -> TokenPair:
    user = await store.user_by_name(db, body.username)
    # verify against a dummy hash for unknown users too, so timing does not reveal who exists
    password_hash = user.password_hash if user else _DUMMY_HASH
    valid = await asyncio.to_thread(verify_password, password_hash, body.password)
    if user is None or not valid:
        raise Problem(401, "wrong username or password", "/problems/unauthorized")
    return await _new_login(db, res, user.id)


@router.post("/refresh")
async def refresh(body: RefreshIn, db: DB, res: Res) -> TokenPair:
    """A new access token and refresh token for a refresh token, which is spent by it."""
    digest = hash_secret(body.refresh_token, pepper(res.settings))
    row = await db.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise unauthorized("invalid, expired or revoked refresh token")
    spent = await db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == row.id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # a second use: someone else has (had) this token
        await _revoke_family(db, res, row.family_id)
        await db.commit()
        log.warning("a spent refresh token was reused; login revoked", user=row.user_id)
        raise unauthorized("refresh token already used; this login has been revoked")
    return await _issue(db, res, row.user_id, row.family_id)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, db: DB, res: Res, body: LogoutIn | None = None) -> Response:
    """Revoke this access token at once, and the login it belongs to (its refresh tokens and
    every access token they issued)."""
    claims = caller.claims
    if claims is None:
        raise Problem(
            400, "API keys are revoked with DELETE /api/v1/api-keys/{id}", "/problems/bad-request"
        )
    families: set[int] = set()
    if claims.family and claims.family.isdigit():
        families.add(int(claims.family))
    if body is not None and body.refresh_token:
        digest = hash_secret(body.refresh_token, pepper(res.settings))
        row = await db.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
        if row is not None and row.user_id == caller.user_id:
            families.add(row.family_id)
    try:
        if claims.jti:
            ttl = max(1, claims.exp - int(time.time()))
            await res.redis.set(REVOKED_JTI + claims.jti, "1", ex=ttl)
    except RedisError:
        raise unavailable("Redis") from None
    for family in families:
        await _revoke_family(db, res, family)
    await db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _new_login(db: DB, res: Res, user_id: int) -> TokenPair:
    return await _issue(db, res, user_id, new_id())


async def _issue(db: DB, res: Res, user_id: int, family_id: int) -> TokenPair:
    """A refresh token stored (hashed) in the family, and an access token naming the family."""
    settings = res.settings
    assert settings.jwt_secret is not None
    refresh_token = new_secret(REFRESH_PREFIX)
    db.add(
        RefreshToken(
            id=new_id(),
            family_id=family_id,
            user_id=user_id,
            token_hash=hash_secret(refresh_token, pepper(settings)),
            expires_at=utcnow() + timedelta(seconds=settings.security.refresh_ttl_seconds),
        )
    )
    await db.commit()
    token, _ = issue_access_token(
        user_id, settings.jwt_secret.get_secret_value(), settings.jwt_ttl_seconds, str(family_id)
    )
    return TokenPair(
        user_id=str(user_id),
        token=token,
        refresh_token=refresh_token,
        expires_in=settings.jwt_ttl_seconds,
    )


async def _revoke_family(db: DB, res: Res, family_id: int) -> None:
    """Every refresh token of the login (in the caller's transaction) and, through Redis, every
    access token it issued (they live at most `jwt_ttl_seconds`)."""
    try:
        await res.redis.set(
            REVOKED_FAMILY + str(family_id), "1", ex=res.settings.jwt_ttl_seconds + 60
        )
    except RedisError:
        raise unavailable("Redis") from None
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
