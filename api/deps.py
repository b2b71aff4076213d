"""FastAPI dependencies: shared resources, DB sessions, the authenticated user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import Problem
from chatee.bus import EventBus
from chatee.config import Settings
from chatee.security import InvalidToken, user_id_from_token


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    redis: Redis
    bus: EventBus
    temporal: Client


def resources(request: Request) -> Resources:
    return request.app.state.resources


async def db_session(res: Annotated[Resources, Depends(resources)]) -> AsyncIterator[AsyncSession]:
    async with res.db() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="JWT from /auth/login or /auth/register")


def current_user_id(
    res: Annotated[Resources, Depends(resources)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    if credentials is None:
        raise Problem(401, "missing bearer token", "/problems/unauthorized")
    try:
        assert res.settings.jwt_secret is not None
        return user_id_from_token(
            credentials.credentials, res.settings.jwt_secret.get_secret_value()
        )
    except InvalidToken:
        raise Problem(401, "invalid or expired token", "/problems/unauthorized") from None


def parse_id(raw: str, what: str) -> int:
    """Path ids are decimal snowflakes; anything else names nothing, so it is a 404."""
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 1 << 63:
        raise Problem(404, f"{what} not found")
    return int(raw)


Res = Annotated[Resources, Depends(resources)]
DB = Annotated[AsyncSession, Depends(db_session)]
UserId = Annotated[int, Depends(current_user_id)]
