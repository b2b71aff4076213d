"""People: register, log in, refresh, log out, the API keys a user gives to services, the
account itself (`/me`: display name, password, deletion) and the user directory.

A login is a refresh-token *family*: register/login start one and answer with a short-lived
access token (a JWT) and a refresh token. A refresh token is traded for a new pair once: the old
one is spent. Presenting a spent one again means it was copied, so the whole family is revoked —
its refresh tokens in the database, its access tokens through a Redis deny-list entry that
outlives them. Logging out does the same for the caller's login and puts the access token
itself on the deny-list until it expires.

API keys (`chk_…`) are shown once, stored as a keyed hash, and carry scopes.

A password change keeps the login that made it and revokes every other one. Deleting an
account keeps its row (so its messages stay attributed, to "Deleted user"), frees its username,
revokes every token and API key at once (a per-user deny-list key checked with the others),
makes it leave its groups and removes its agents and agent sessions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatee import agent_sessions
from chatee.errors import (
    ChateeError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    Unavailable,
)
from chatee.ids import new_id
from chatee.logging import get_logger
from chatee.messaging import changes
from chatee.models import Agent, ApiKey, McpServer, RefreshToken, User, utcnow
from chatee.redis import REDIS_ERRORS
from chatee.security import (
    API_KEY_DISPLAY_CHARS,
    API_KEY_PREFIX,
    REFRESH_PREFIX,
    REVOKED_FAMILY,
    REVOKED_JTI,
    REVOKED_USER,
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
DELETED_NAME = "Deleted user"  # what a deleted account's messages and memberships show
UNUSABLE_HASH = "!"  # no password verifies against it


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


async def create_user(
    db: AsyncSession, username: str, password_hash: str, display_name: str | None = None
) -> User:
    name = clean_display_name(display_name) if display_name else username
    user = User(
        id=new_id(),
        username=username,
        display_name=name,
        search_name=name.lower(),
        password_hash=password_hash,
    )
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise UsernameTaken(username) from None
    return user


async def user_by_name(db: AsyncSession, username: str) -> User | None:
    stmt = select(User).where(User.username == username.lower(), User.deleted_at.is_(None))
    return (await db.execute(stmt)).scalar_one_or_none()


def clean_display_name(name: str) -> str:
    """A display name as stored: surrounding and repeated whitespace collapsed; never empty."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise Invalid("display_name: must not be blank", field="display_name")
    return cleaned


# -- logins ------------------------------------------------------------------------------------


async def register(
    svc: Services,
    db: AsyncSession,
    username: str,
    password: str,
    display_name: str | None = None,
) -> Login:
    password_hash = await asyncio.to_thread(hash_password, password)
    user = await create_user(db, username, password_hash, display_name)
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
    except REDIS_ERRORS:
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
    except REDIS_ERRORS:
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


# -- the account: /me ---------------------------------------------------------------------------


async def me(db: AsyncSession, user_id: int) -> User:
    user = await db.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("user not found")
    return user


async def rename(db: AsyncSession, user_id: int, display_name: str) -> User:
    """Set the name members and messages show (the username never changes)."""
    user = await me(db, user_id)
    user.display_name = clean_display_name(display_name)
    user.search_name = user.display_name.lower()
    await db.commit()
    return user


async def _check_password(user: User, password: str) -> None:
    if not await asyncio.to_thread(verify_password, user.password_hash, password):
        raise Forbidden("the password is wrong", "wrong-password")


async def change_password(
    svc: Services,
    db: AsyncSession,
    user_id: int,
    claims: AccessClaims | None,
    current_password: str,
    new_password: str,
) -> None:
    """Set a new password and revoke every other login of the user: their refresh tokens and
    the access tokens they issued. The login making the change (`claims.family`) stays valid;
    API keys are credentials of their own and stay too (revoke them one by one)."""
    user = await me(db, user_id)
    await _check_password(user, current_password)
    keep = int(claims.family) if claims and claims.family and claims.family.isdigit() else None
    user.password_hash = await asyncio.to_thread(hash_password, new_password)
    for family in await _live_families(svc, db, user_id):
        if family != keep:
            await _revoke_family(svc, db, family)
    await db.commit()


async def _live_families(svc: Services, db: AsyncSession, user_id: int) -> list[int]:
    """The user's logins that may still hold a valid refresh token or access token: an access
    token is issued with a refresh-token row, so it dies `jwt_ttl_seconds` after that row."""
    recent = utcnow() - timedelta(seconds=svc.settings.jwt_ttl_seconds + 60)
    rows = await db.scalars(
        select(RefreshToken.family_id)
        .where(
            RefreshToken.user_id == user_id,
            or_(RefreshToken.revoked_at.is_(None), RefreshToken.created_at >= recent),
        )
        .distinct()
    )
    return list(rows)


async def delete_account(svc: Services, db: AsyncSession, user_id: int, password: str) -> None:
    """Delete the account: its row stays, marked, so its messages stay attributed to "Deleted
    user"; its username is freed; every token and API key is refused from now on (open
    WebSockets and SSE streams close with their next re-check); it leaves its groups (an
    owner hands over, as on leaving); its agents and agent sessions go (workflows stopped)."""
    user = await me(db, user_id)
    await _check_password(user, password)
    try:  # first, so a Redis outage changes nothing
        await svc.redis.set(REVOKED_USER + str(user_id), "1")
    except REDIS_ERRORS:
        raise Unavailable("Redis") from None
    now = utcnow()
    user.deleted_at = now
    user.username = f"deleted:{user_id}"  # not a valid username: the old one is free again
    user.display_name = DELETED_NAME
    user.search_name = None
    user.password_hash = UNUSABLE_HASH
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await db.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await db.commit()
    log.info("account deleted", user=user_id)

    agents = list(await db.scalars(select(Agent).where(Agent.owner_id == user_id)))
    for member_id in [user_id, *(a.id for a in agents)]:
        await changes.leave_groups(svc, member_id)  # each group hears of it (`member`)
    await agent_sessions.delete_sessions_of(svc, db, user_id)
    for agent in agents:  # one by one: the agent cache drops each (chatee/messaging/cache.py)
        await db.delete(agent)
    await db.execute(delete(McpServer).where(McpServer.owner_id == user_id))  # may hold secrets
    await db.commit()


# -- the user directory --------------------------------------------------------------------------


async def profile(db: AsyncSession, user_id: int) -> User:
    """Anyone's public profile; a deleted account is not found."""
    return await me(db, user_id)


async def search_users(db: AsyncSession, q: str, limit: int) -> list[User]:
    """Users whose username or display name starts with `q`, case-insensitively, deleted
    accounts left out. Two index range scans (the unique username index and
    `ix_users_search_name`), each limited, merged: fast at any directory size."""
    prefix = q.strip().lower()
    if not prefix:
        return []
    found: dict[int, tuple[str, User]] = {}
    for column in (User.username, User.search_name):
        stmt = (
            select(User)
            .where(_starts_with(db, column, prefix), User.deleted_at.is_(None))
            .order_by(column)  # the index's order: no sort, whatever the prefix matches
            .limit(limit)
        )
        for user in await db.scalars(stmt):
            key = getattr(user, column.key) or ""
            if user.id not in found or key < found[user.id][0]:
                found[user.id] = (key, user)
    ranked = sorted(found.values(), key=lambda pair: (pair[0], pair[1].id))
    return [user for _, user in ranked[:limit]]


def _starts_with(db: AsyncSession, column: Any, prefix: str) -> Any:
    """`column` starts with `prefix`, written so the planner uses the column's index: a range
    on SQLite (binary collation: `LIKE` would not use the index), `LIKE 'p%'` on MySQL (its
    case-insensitive collations make a range bound unreliable)."""
    if db.get_bind().dialect.name == "sqlite":
        return (column >= prefix) & (column < prefix + chr(0x10FFFF))
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")
