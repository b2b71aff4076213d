"""`GET /sync`: the caller's inbox after an `inbox_seq` — how a client catches up.

`inbox_seq` is gap-free per user, so `after` = the last number a client holds returns
exactly what it missed: nothing lost, nothing twice. Page with `next_after` while `has_more`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import UserId
from api.routers.conversations import Msg

router = APIRouter(tags=["sync"])


class SyncPage(BaseModel):
    items: list[dict[str, Any]]  # {inbox_seq, conversation_id, message}
    next_after: int
    has_more: bool


async def sync_page(m: Msg, user_id: int, after: int, limit: int) -> SyncPage:
    items = await m.store.inbox(user_id, after, limit)
    next_after = items[-1].inbox_seq if items else after
    if len(items) == limit:
        has_more = True
    else:  # a short page can still be followed by entries committed meanwhile
        head = (await m.store.inbox_heads([user_id]))[user_id]
        has_more = head > next_after
        next_after = min(next_after, head)  # an `after` beyond the end points at the end
    return SyncPage(items=[i.to_json() for i in items], next_after=next_after, has_more=has_more)


@router.get("/sync")
async def sync(
    user_id: UserId,
    m: Msg,
    after: Annotated[int, Query(ge=0, description="the last inbox_seq you have; 0 for all")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> SyncPage:
    """Inbox entries with `inbox_seq > after`, ascending and contiguous."""
    size = min(limit or m.knobs.sync_page_size, m.knobs.sync_page_size)
    return await sync_page(m, user_id, after, size)
