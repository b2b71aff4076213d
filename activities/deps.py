"""What activities need at run time, built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatee.bus import EventBus
from chatee.config import Settings
from chatee.db import create_engine, session_factory
from chatee.llm import ClientPool
from chatee.mcp import McpManager, persist_tools
from chatee.redis import connect_redis


@dataclass
class Deps:
    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    redis: Redis
    bus: EventBus
    llm: ClientPool
    mcp: McpManager

    @classmethod
    def create(cls, settings: Settings) -> Deps:
        engine = create_engine(settings.sqlalchemy_url())
        redis = connect_redis(settings)
        db = session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            db=db,
            redis=redis,
            bus=EventBus(redis, settings.events.retention_seconds, settings.events.max_len),
            llm=ClientPool(settings),
            mcp=McpManager(settings, on_tools_changed=persist_tools(db)),
        )

    async def close(self) -> None:
        await self.mcp.close()
        await self.llm.close()
        await self.redis.aclose()
        await self.engine.dispose()
