"""Services: the shared objects of one process, built once at its start, closed at its end.

The API's lifespan and the worker's startup each build one (`Services.create`), and every use
case, route, frame handler and activity takes what it needs from it — so nothing builds a
second Redis client, message store or LLM pool behind anyone's back. What a process does not
use costs nothing until first touched (an LLM pool makes no connection until asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from chatee.bus import EventBus
from chatee.config import Settings
from chatee.db import create_engine, session_factory
from chatee.llm import ClientPool
from chatee.logging import get_logger
from chatee.mcp import McpManager, persist_tools
from chatee.messaging.service import Messenger
from chatee.messaging.stores import MessageStore, create_store
from chatee.rag.search import Retriever
from chatee.ratelimit import Limiter
from chatee.redis import connect_redis

log = get_logger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]  # `async with sessionmaker() as db:`
    # reads that tolerate lag (history pages, search, listings): the replica when configured,
    # else the primary. Never for the ledger, inboxes, or a read right after a write.
    reader: async_sessionmaker[AsyncSession]
    replica: AsyncEngine | None
    redis: Redis
    bus: EventBus  # each agent session's event stream
    temporal: Client
    llm: ClientPool
    mcp: McpManager  # this process's pooled MCP sessions
    messages: MessageStore  # conversation messages and inboxes (SQL or HBase)
    messenger: Messenger  # sending, reading, typing; its cache and pushes
    retriever: Retriever  # knowledge-base search (embeddings share `llm`)
    limiter: Limiter

    @classmethod
    def create(
        cls, settings: Settings, temporal: Client, role: Literal["api", "worker"] = "api"
    ) -> Services:
        pool = settings.database.api if role == "api" else settings.database.worker
        engine = create_engine(settings.sqlalchemy_url(), pool)
        sessionmaker = session_factory(engine)
        replica = settings.database.replica_url
        replica_engine = create_engine(replica, pool) if replica else None
        reader = session_factory(replica_engine) if replica_engine else sessionmaker
        log.info(  # the budget: processes x most connections must fit the server's limit
            "database pool",
            role=role,
            size=pool.size,
            max_overflow=pool.max_overflow,
            most_connections=pool.most * (2 if replica else 1),
            replica=bool(replica),
        )
        redis = connect_redis(settings)
        llm = ClientPool(settings)
        messages = create_store(settings, sessionmaker)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            reader=reader,
            replica=replica_engine,
            redis=redis,
            bus=EventBus(redis, settings.events.retention_seconds, settings.events.max_len),
            temporal=temporal,
            llm=llm,
            mcp=McpManager(settings, on_tools_changed=persist_tools(sessionmaker)),
            messages=messages,
            messenger=Messenger(settings, sessionmaker, redis, messages, temporal),
            retriever=Retriever(settings, llm),
            limiter=Limiter(redis, settings),
        )

    async def close(self) -> None:
        await self.messenger.cache.close()
        await self.bus.close()
        await self.messages.close()
        await self.mcp.close()
        await self.llm.close()
        await self.redis.aclose()
        if self.replica:
            await self.replica.dispose()
        await self.engine.dispose()
