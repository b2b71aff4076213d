"""Memory: what an agent remembers — on its own (`scope: agent`) and about the caller
(`scope: user`) — and everything agents remember about the caller (`/memory`). The same store
the AG_MEMORY_LOAD / AG_MEMORY_STORE steps read and write; the flow is in chatee/knowledge.py."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status

from api.deps import DB, Svc, UserId
from api.schemas_rag import MemoryIn, MemoryOut, MemoryPage, UserMemoryIn
from chatee import knowledge, memory
from chatee.models import Memory

router = APIRouter(tags=["memory"])


def memory_out(row: Memory) -> MemoryOut:
    return MemoryOut(
        id=str(row.id),
        agent_id=str(row.agent_id),
        key=row.key,
        value=row.value,
        scope="agent" if row.user_id == memory.AGENT_WIDE else "user",
        updated_at=row.updated_at,
    )


@router.get("/agents/{agent_id}/memory")
async def agent_memory(
    agent_id: str,
    user_id: UserId,
    db: DB,
    scope: Annotated[Literal["all", "agent", "user"], Query()] = "all",
) -> MemoryPage:
    """The agent's own entries and its entries about the caller (what AG_MEMORY_LOAD loads)."""
    rows = await knowledge.agent_memory(db, user_id, agent_id, scope)
    return MemoryPage(items=[memory_out(r) for r in rows])


@router.post("/agents/{agent_id}/memory", status_code=status.HTTP_201_CREATED)
async def remember(agent_id: str, body: MemoryIn, user_id: UserId, db: DB, svc: Svc) -> MemoryOut:
    """Insert or replace the entry under `key` (per scope)."""
    row = await knowledge.remember(svc, db, user_id, agent_id, body.key, body.value, body.scope)
    return memory_out(row)


@router.delete("/agents/{agent_id}/memory/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
async def forget(agent_id: str, entry_id: str, user_id: UserId, db: DB) -> Response:
    await knowledge.forget(db, user_id, agent_id, entry_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/memory")
async def my_memory(user_id: UserId, db: DB) -> MemoryPage:
    """Everything any agent remembers about the caller."""
    return MemoryPage(items=[memory_out(r) for r in await memory.about_user(db, user_id)])


@router.post("/memory", status_code=status.HTTP_201_CREATED)
async def remember_me(body: UserMemoryIn, user_id: UserId, db: DB, svc: Svc) -> MemoryOut:
    row = await knowledge.remember(svc, db, user_id, body.agent_id, body.key, body.value)
    return memory_out(row)


@router.delete("/memory/{entry_id}", status_code=status.HTTP_204_NO_CONTENT)
async def forget_me(entry_id: str, user_id: UserId, db: DB) -> Response:
    await knowledge.forget_about_me(db, user_id, entry_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
