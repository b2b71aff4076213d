"""`GET /presence`: online/offline and last seen, from the Redis leases of live sockets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Msg, UserId
from chatee.errors import Invalid
from chatee.messaging import presence

router = APIRouter(tags=["presence"])
MAX_USERS = 200


class PresenceOut(BaseModel):
    user_id: str
    status: str  # online | offline
    last_seen: str | None


@router.get("/presence")
async def get_presence(
    _: UserId,
    m: Msg,
    user_ids: Annotated[str, Query(description="comma-separated user ids")],
) -> list[PresenceOut]:
    raw = [part.strip() for part in user_ids.split(",") if part.strip()]
    if not raw or len(raw) > MAX_USERS:
        raise Invalid(f"user_ids: give 1 to {MAX_USERS} ids")
    if not all(p.isdigit() and len(p) <= 20 for p in raw):
        raise Invalid("user_ids: ids are decimal numbers")
    states = await presence.status(m.redis, [int(p) for p in raw])
    return [PresenceOut.model_validate(s.to_json()) for s in states]
