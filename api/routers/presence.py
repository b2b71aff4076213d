"""`GET /presence`: online/offline and last seen, from the Redis leases of live sockets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Msg, UserId
from api.errors import Problem
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
        raise Problem(422, f"user_ids: give 1 to {MAX_USERS} ids", "/problems/validation")
    if not all(p.isdigit() and len(p) <= 20 for p in raw):
        raise Problem(422, "user_ids: ids are decimal numbers", "/problems/validation")
    states = await presence.status(m.redis, [int(p) for p in raw])
    return [PresenceOut.model_validate(s.to_json()) for s in states]
