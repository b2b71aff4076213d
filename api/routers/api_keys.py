"""API keys for service clients: `chk_…` secrets, shown once, stored as a keyed hash, scoped.

Only a user's own access token manages keys: a key cannot create, list or revoke keys.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import DB, Principal, Svc, current_principal, parse_id
from chatee import people
from chatee.errors import Forbidden
from chatee.models import ApiKey
from chatee.security import SCOPES
from chatee.timefmt import Timestamp

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


def key_owner(principal: Annotated[Principal, Depends(current_principal)]) -> int:
    if principal.kind != "user":
        raise Forbidden("API keys cannot manage API keys", "insufficient-scope")
    return principal.user_id


Owner = Annotated[int, Depends(key_owner)]


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(
        min_length=1,
        max_length=len(SCOPES),
        description="any of: " + ", ".join(SCOPES) + " (`x` covers `x:read` and `x:write`)",
    )

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {', '.join(SCOPES)}")
        return sorted(set(scopes))


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    scopes: list[str]
    created_at: Timestamp
    last_used_at: Timestamp | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="the secret: shown this once, never again")


def _out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=str(key.id),
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyIn, user_id: Owner, db: DB, svc: Svc) -> ApiKeyCreated:
    key, secret = await people.create_api_key(svc, db, user_id, body.name, body.scopes)
    return ApiKeyCreated(**_out(key).model_dump(), key=secret)


@router.get("")
async def list_keys(user_id: Owner, db: DB) -> list[ApiKeyOut]:
    """Your live keys, newest first (never their secrets)."""
    return [_out(k) for k in await people.api_keys(db, user_id)]


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(key_id: str, user_id: Owner, db: DB) -> Response:
    """Revoke a key: from now on it is refused with 401."""
    await people.revoke_api_key(db, user_id, parse_id(key_id, "API key"))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
