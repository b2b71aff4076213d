"""People: `/me` (the caller's account) and the user directory (`/users`). The use cases,
with what a password change and an account deletion revoke, are in chatee/people.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import DB, Caller, ReadDB, Svc, UserId, parse_id
from api.schemas import DeleteMeIn, MeIn, MeOut, PasswordIn, UserOut, UserPage
from chatee import people
from chatee.models import User

router = APIRouter(tags=["users"])


def me_out(user: User) -> MeOut:
    return MeOut(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=user.created_at,
    )


def user_out(user: User) -> UserOut:
    return UserOut(id=str(user.id), username=user.username, display_name=user.display_name)


@router.get("/me")
async def get_me(user_id: UserId, db: DB) -> MeOut:
    return me_out(await people.me(db, user_id))


@router.patch("/me")
async def update_me(body: MeIn, user_id: UserId, db: DB) -> MeOut:
    """Change your display name (what members and messages show); the username stays."""
    if body.display_name is None:
        return me_out(await people.me(db, user_id))
    return me_out(await people.rename(db, user_id, body.display_name))


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(body: PasswordIn, caller: Caller, db: DB, svc: Svc) -> Response:
    """Set a new password. Every other login is signed out (its refresh tokens and access
    tokens are refused); the login making the change stays valid. A wrong current password
    is 403."""
    await people.change_password(
        svc, db, caller.user_id, caller.claims, body.current_password, body.new_password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT)
async def delete_me(body: DeleteMeIn, user_id: UserId, db: DB, svc: Svc) -> Response:
    """Delete your account (password required). Your messages stay, shown as from "Deleted
    user"; your username becomes free; every token and API key stops working and open
    WebSockets close with 4401; you leave your groups; your agents and sessions are deleted."""
    await people.delete_account(svc, db, user_id, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users")
async def search_users(
    _: UserId,
    db: ReadDB,
    q: Annotated[str, Query(min_length=1, max_length=64, description="prefix of a name")],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> UserPage:
    """People whose username or display name starts with `q` (any case)."""
    return UserPage(items=[user_out(u) for u in await people.search_users(db, q, limit)])


@router.get("/users/{user_id}")
async def get_user(user_id: str, _: UserId, db: ReadDB) -> UserOut:
    """A user's public profile (404 for an unknown or deleted account)."""
    return user_out(await people.profile(db, parse_id(user_id, "user")))
