"""Register, log in, refresh, log out: the HTTP face of chatee/people.py, where logins,
refresh-token families and revocation are explained."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import DB, Caller, Svc
from api.schemas import AuthResult, Credentials, Registration
from chatee import people

router = APIRouter(prefix="/auth", tags=["auth"])


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


def token_pair(login: people.Login) -> TokenPair:
    return TokenPair(
        user_id=str(login.user_id),
        token=login.token,
        refresh_token=login.refresh_token,
        expires_in=login.expires_in,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: Registration, db: DB, svc: Svc) -> TokenPair:
    """A new account (`display_name` defaults to the username), logged in."""
    login = await people.register(svc, db, body.username, body.password, body.display_name)
    return token_pair(login)


@router.post("/login")
async def login(body: Credentials, db: DB, svc: Svc) -> TokenPair:
    """A wrong username or password is 401, whatever its length."""
    return token_pair(await people.login(svc, db, body.username, body.password))


@router.post("/refresh")
async def refresh(body: RefreshIn, db: DB, svc: Svc) -> TokenPair:
    """A new access token and refresh token for a refresh token, which is spent by it."""
    return token_pair(await people.refresh(svc, db, body.refresh_token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(caller: Caller, db: DB, svc: Svc, body: LogoutIn | None = None) -> Response:
    """Revoke this access token at once, and the login it belongs to (its refresh tokens and
    every access token they issued)."""
    refresh_token = body.refresh_token if body is not None else None
    await people.logout(svc, db, caller.user_id, caller.claims, refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
