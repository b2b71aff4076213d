"""Key/value memory of an agent, and of an agent about one user (the same store the
`AG_MEMORY_LOAD` / `AG_MEMORY_STORE` steps and the memory API use)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.ids import new_id
from chatee.models import Memory

AGENT_WIDE = 0  # user_id of entries that belong to the agent itself
MAX_KEY = 128
MAX_VALUE = 4000


async def entries(
    db: AsyncSession, agent_id: int, user_id: int | None, scope: str = "all"
) -> Sequence[Memory]:
    owners = []
    if scope in ("agent", "all"):
        owners.append(Memory.user_id == AGENT_WIDE)
    if scope in ("user", "all") and user_id is not None:
        owners.append(Memory.user_id == user_id)
    stmt = select(Memory).where(Memory.agent_id == agent_id, or_(*owners)).order_by(Memory.key)
    return (await db.execute(stmt)).scalars().all()


async def about_user(db: AsyncSession, user_id: int) -> Sequence[Memory]:
    """Every entry any agent keeps about this user (the user's own memory)."""
    stmt = select(Memory).where(Memory.user_id == user_id).order_by(Memory.agent_id, Memory.key)
    return (await db.execute(stmt)).scalars().all()


async def put(
    factory: async_sessionmaker[AsyncSession], agent_id: int, user_id: int, key: str, value: str
) -> Memory:
    """Insert or replace one entry; safe against a concurrent writer of the same key."""
    key, value = key[:MAX_KEY], value[:MAX_VALUE]
    for attempt in (1, 2):
        async with factory() as db:
            stmt = select(Memory).where(
                Memory.agent_id == agent_id, Memory.user_id == user_id, Memory.key == key
            )
            row = (await db.execute(stmt)).scalar_one_or_none()
            if row is None:
                row = Memory(id=new_id(), agent_id=agent_id, user_id=user_id, key=key, value=value)
                db.add(row)
            else:
                row.value = value
            try:
                await db.commit()
                await db.refresh(row)
                return row
            except IntegrityError:  # a concurrent writer inserted the key: update it instead
                if attempt == 2:
                    raise
                await db.rollback()
    raise RuntimeError("unreachable")  # the loop returns or raises


async def forget(db: AsyncSession, agent_id: int, user_id: int, key: str) -> bool:
    stmt = select(Memory).where(
        Memory.agent_id == agent_id, Memory.user_id == user_id, Memory.key == key
    )
    row = (await db.execute(stmt)).scalar_one_or_none()
    if row is None:
        return False
    await db.delete(row)
    await db.commit()
    return True
