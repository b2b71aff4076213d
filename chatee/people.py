"""People: register, log in, refresh, log out, and the API keys a user gives to services.

A login is a refresh-token *family*: register/login start one and answer with a short-lived
access token (a JWT) and a refresh token. A refresh token is traded for a new pair once: the old
one is spent. Presenting a spent one again means it was copied, so the whole family is revoked —
its refresh tokens in the database, its access tokens through a Redis deny-list entry that
outlives them. Logging out does the same for the caller's login and puts the access token
itself on the deny-list until it expires.

API keys (`chk_…`) are shown once, stored as a keyed hash, and carry scopes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatee.errors import ChateeError, Conflict, NotFound, Unauthorized, Unavailable
from chatee.ids import new_id
from chatee.logging import get_logger
from chatee.models import ApiKey, RefreshToken, User, utcnow
from chatee.security import (
    API_KEY_DISPLAY_CHARS,
    API_KEY_PREFIX,
    REFRESH_PREFIX,
    REVOKED_FAMILY,
    REVOKED_JTI,
    AccessClaims,
    hash_password,
    hash_secret,
    issue_access_token,
    new_secret,
    pepper,
    verify_password,
)
from chatee.services import Services

log = get_logger(__name__)
_DUMMY_HASH = hash_password("not a real password")


class UsernameTaken(Conflict):
    default_code = "username-taken"

    def __init__(self, username: str) -> None:
        super().__init__("that username is taken")
        self.username = username


@dataclass(frozen=True)
class Login:
    """What register, login and refresh answer: `token` is the access token (bearer); trade
    `refresh_token` for a new pair before `expires_in` seconds are up."""

    user_id: int
    token: str
    refresh_token: str
    expires_in: int


# -- users -------------------------------------------------------------------------------------


async def create_user(db: AsyncSession, username: str, password_hash: str) -> User:
    user = User(id=new_id(), username=username, display_name=username, password_hash=password_hash)
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise UsernameTaken(username) from None
    return user


async def user_by_name(db: AsyncSession, username: str) -> User | None:
    return (await db.execute(select(User).where(User.username == username))).scalar_one_or_none()


# -- logins ------------------------------------------------------------------------------------


async def register(svc: Services, db: AsyncSession, username: str, password: str) -> Login:
    user = await create_user(db, username, await asyncio.to_thread(hash_password, password))
    return await _issue(svc, db, user.id, new_id())


async def login(svc: Services, db: AsyncSession, username: str, password: str) -> Login:
    user = await user_by_name(db, username)
    # verify against a dummy hash for unknown users too, so timing does not reveal who exists
    password_hash = user.password_hash if user else _DUMMY_HASH
    valid = await asyncio.to_thread(verify_password, password_hash, password)
    if user is None or not valid:
        raise Unauthorized("wrong username or password")
    return await _issue(svc, db, user.id, new_id())


async def refresh(svc: Services, db: AsyncSession, refresh_token: str) -> Login:
    """A new access token and refresh token for a refresh token, which is spent by it."""
    digest = hash_secret(refresh_token, pepper(svc.settings))
    row = await db.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized("invalid, expired or revoked refresh token")
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
        await _revoke_family(svc, db, row.family_id)
        await db.commit()
        log.warning("a spent refresh token was reused; login revoked", user=row.user_id)
        raise Unauthorized("refresh token already used; this login has been revoked")
    return await _issue(svc, db, row.user_id, row.family_id)


async def logout(
    svc: Services,
    db: AsyncSession,
    user_id: int,
    claims: AccessClaims | None,
    refresh_token: str | None = None,
) -> None:
    """Revoke this access token at once, and the login it belongs to (its refresh tokens and
    every access token they issued); `refresh_token` names another login of the caller's.
    `claims` is None for a caller holding an API key, which is revoked another way."""
    if claims is None:
        raise ChateeError("API keys are revoked with DELETE /api/v1/api-keys/{id}")
    families: set[int] = set()
    if claims.family and claims.family.isdigit():
        families.add(int(claims.family))
    if refresh_token:
        digest = hash_secret(refresh_token, pepper(svc.settings))
        row = await db.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
        if row is not None and row.user_id == user_id:
            families.add(row.family_id)
    try:
        if claims.jti:
            ttl = max(1, claims.exp - int(time.time()))
            await svc.redis.set(REVOKED_JTI + claims.jti, "1", ex=ttl)
    except RedisError:
        raise Unavailable("Redis") from None
    for family in families:
        await _revoke_family(svc, db, family)
    await db.commit()


async def _issue(svc: Services, db: AsyncSession, user_id: int, family_id: int) -> Login:
    """A refresh token stored (hashed) in the family, and an access token naming the family."""
    settings = svc.settings
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
    return Login(user_id, token, refresh_token, settings.jwt_ttl_seconds)


async def _revoke_family(svc: Services, db: AsyncSession, family_id: int) -> None:
    """Every refresh token of the login (in the caller's transaction) and, through Redis, every
    access token it issued (they live at most `jwt_ttl_seconds`)."""
    try:
        await svc.redis.set(
            REVOKED_FAMILY + str(family_id), "1", ex=svc.settings.jwt_ttl_seconds + 60
        )
    except RedisError:
        raise Unavailable("Redis") from None
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# -- API keys ----------------------------------------------------------------------------------


async def create_api_key(
    svc: Services, db: AsyncSession, user_id: int, name: str, scopes: list[str]
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is shown this once and never stored."""
    live = await db.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    )
    most = svc.settings.security.max_api_keys_per_user
    if (live or 0) >= most:
        raise Conflict(f"at most {most} API keys per user; revoke one", "too-many")
    secret = new_secret(API_KEY_PREFIX)
    key = ApiKey(
        id=new_id(),
        user_id=user_id,
        name=name,
        prefix=secret[:API_KEY_DISPLAY_CHARS],
        key_hash=hash_secret(secret, pepper(svc.settings)),
        scopes=scopes,
        created_at=utcnow(),
    )
    db.add(key)
    await db.commit()
    return key, secret


async def api_keys(db: AsyncSession, user_id: int) -> list[ApiKey]:
    """The user's live keys, newest first."""
    rows = await db.scalars(
        select(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id.desc())
    )
    return list(rows)


async def revoke_api_key(db: AsyncSession, user_id: int, key_id: int) -> None:
    """From now on the key is refused; revoking it again, or another user's, is "not found"."""
    revoked = await db.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await db.commit()
    if revoked.rowcount != 1:
        raise NotFound("API key not found")
