"""`GET /sync`: the caller's inbox after an `inbox_seq` — how a client catches up.

`inbox_seq` is gap-free per user, so `after` = the last number a client holds returns
exactly what it missed: nothing lost, nothing twice. Page with `next_after` while `has_more`.
Every entry has a `kind`: `message` (a new message), `message.edited`, `message.deleted`,
`reaction` or `member` — one cursor for everything a device must catch up on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import Msg, UserId

router = APIRouter(tags=["sync"])


class SyncPage(BaseModel):
    items: list[dict[str, Any]]  # {inbox_seq, kind, conversation_id, message | change fields}
    next_after: int
    has_more: bool


@router.get("/sync")
async def sync(
    user_id: UserId,
    m: Msg,
    after: Annotated[int, Query(ge=0, description="the last inbox_seq you have; 0 for all")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> SyncPage:
    """Inbox entries with `inbox_seq > after`, ascending and contiguous, each with its
    `kind`."""
    page = await m.inbox_page(user_id, after, limit)
    return SyncPage(items=page.items, next_after=page.next_after, has_more=page.has_more)
