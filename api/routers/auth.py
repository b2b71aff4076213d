"""Register and log in; both answer with a bearer JWT."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, status

from api.deps import DB, Res
from api.errors import Problem
from api.schemas import AuthResult, Credentials
from chatee import store
from chatee.security import hash_password, issue_token, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])
_DUMMY_HASH = hash_password("not a real password")


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: Credentials, db: DB, res: Res) -> AuthResult:
    try:
        user = await store.create_user(
            db, body.username, await asyncio.to_thread(hash_password, body.password)
        )
    except store.UsernameTaken:
        raise Problem(409, "that username is taken", "/problems/username-taken") from None
    return _token(user.id, res)


@router.post("/login")
async def login(body: Credentials, db: DB, res: Res) -> AuthResult:
    user = await store.user_by_name(db, body.username)
    # verify against a dummy hash for unknown users too, so timing does not reveal who exists
    password_hash = user.password_hash if user else _DUMMY_HASH
    valid = await asyncio.to_thread(verify_password, password_hash, body.password)
    if user is None or not valid:
        raise Problem(401, "wrong username or password", "/problems/unauthorized")
    return _token(user.id, res)


def _token(user_id: int, res: Res) -> AuthResult:
    assert res.settings.jwt_secret is not None
    token = issue_token(
        user_id, res.settings.jwt_secret.get_secret_value(), res.settings.jwt_ttl_seconds
    )
    return AuthResult(user_id=str(user_id), token=token)
