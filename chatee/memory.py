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


async def put(
    factory: async_sessionmaker[AsyncSession], agent_id: int, user_id: int, key: str, value: str
) -> None:
    """Insert or replace one entry; safe against a concurrent writer of the same key."""
    key, value = key[:MAX_KEY], value[:MAX_VALUE]
    for _ in range(2):
        async with factory() as db:
            stmt = select(Memory).where(
                Memory.agent_id == agent_id, Memory.user_id == user_id, Memory.key == key
            )
            row = (await db.execute(stmt)).scalar_one_or_none()
            if row is None:
                db.add(
                    Memory(id=new_id(), agent_id=agent_id, user_id=user_id, key=key, value=value)
                )
            else:
                row.value = value
            try:
                await db.commit()
                return
            except IntegrityError:
                await db.rollback()


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
