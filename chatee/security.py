"""Password hashing (argon2), access tokens (JWT, HS256), refresh tokens and API keys.

Access tokens are short-lived JWTs carrying `jti` (the token's id, for logout) and `fam` (the
login's refresh-token family, so revoking a login also kills its live access tokens). Refresh
tokens and API keys are opaque random strings stored only as a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatee.config import Settings

_hasher = PasswordHasher()
ALGORITHM = "HS256"
API_KEY_PREFIX = "chk_"
REFRESH_PREFIX = "chr_"
# how an API key is shown after creation: the prefix plus the first characters of the secret
API_KEY_DISPLAY_CHARS = 12


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says: who, until when, and the ids revocation works on."""

    user_id: int
    exp: int
    jti: str | None = None
    family: str | None = None


def issue_token(user_id: int, secret: str, ttl_seconds: int) -> str:
    """A bare access token (tests, benchmarks, service tooling)."""
    return issue_access_token(user_id, secret, ttl_seconds)[0]


def issue_access_token(
    user_id: int, secret: str, ttl_seconds: int, family: str | None = None
) -> tuple[str, AccessClaims]:
    now = int(time.time())
    claims = AccessClaims(user_id, now + ttl_seconds, uuid.uuid4().hex, family)
    payload: dict[str, object] = {"sub": str(user_id), "iat": now, "exp": claims.exp}
    payload["jti"] = claims.jti
    if family is not None:
        payload["fam"] = family
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


class InvalidToken(Exception):
    pass


def decode_access_token(token: str, secret: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
        jti, family = claims.get("jti"), claims.get("fam")
        return AccessClaims(
            int(claims["sub"]),
            int(claims["exp"]),
            jti if isinstance(jti, str) else None,
            family if isinstance(family, str) else None,
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken(str(exc)) from None


# -- revocation: Redis deny-list keys an access token is checked against ------------------------

REVOKED_JTI = "chatee:auth:revoked:jti:"  # + jti, until the token's exp
REVOKED_FAMILY = "chatee:auth:revoked:family:"  # + family id, for one access-token lifetime
REVOKED_USER = "chatee:auth:revoked:user:"  # + user id: a deleted account, every token it had


def deny_keys(claims: AccessClaims) -> list[str]:
    """The deny-list keys that, if any is set, mean this access token was revoked. The user's
    own key rides in the same round trip, so a deleted account's tokens die at once — even a
    token without a login family."""
    keys = [REVOKED_JTI + claims.jti] if claims.jti else []
    if claims.family:
        keys.append(REVOKED_FAMILY + claims.family)
    keys.append(REVOKED_USER + str(claims.user_id))
    return keys


# -- opaque secrets: refresh tokens and API keys -------------------------------------------------


def new_secret(prefix: str) -> str:
    """256 random bits, URL-safe, behind a recognisable prefix (`chk_…`, `chr_…`)."""
    return prefix + secrets.token_urlsafe(32)


def derive_pepper(jwt_secret: str, configured: str | None) -> bytes:
    """The key for secret hashes: the configured pepper, else one derived from the JWT secret."""
    if configured:
        return configured.encode()
    return hmac.new(jwt_secret.encode(), b"chatee api-key pepper v1", hashlib.sha256).digest()


def pepper(settings: Settings) -> bytes:
    """This deployment's key for refresh-token and API-key hashes."""
    assert settings.jwt_secret is not None
    configured = settings.security.api_key_pepper
    return derive_pepper(
        settings.jwt_secret.get_secret_value(),
        configured.get_secret_value() if configured else None,
    )


def hash_secret(secret: str, pepper: bytes) -> str:
    """HMAC-SHA256 hex. Fine for 256-bit random secrets (nothing to brute-force), fast enough to
    run on every request, and useless without the pepper if the table leaks."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


# -- API key scopes ---------------------------------------------------------------------------

# route groups (first path segment under /api/v1) → the scope that covers them
SCOPE_GROUPS: dict[str, str] = {
    "agents": "agents",
    "memory": "agents",
    "sessions": "chat",
    "chat": "chat",
    "conversations": "conversations",
    "sync": "conversations",
    "presence": "conversations",
    "users": "conversations",  # finding people to talk to
    "mcp": "mcp",
    "knowledge-bases": "knowledge",
}
SCOPES = sorted(
    {g for g in SCOPE_GROUPS.values()}
    | {f"{g}:{m}" for g in SCOPE_GROUPS.values() for m in ("read", "write")}
)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def scope_allows(granted: list[str] | frozenset[str], group: str, write: bool) -> bool:
    """`group` grants reads and writes; `group:read` / `group:write` one of them."""
    return group in granted or f"{group}:{'write' if write else 'read'}" in granted
