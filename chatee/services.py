"""Services: the shared objects of one process, built once at its start, closed at its end.

The API's lifespan and the worker's startup each build one (`Services.create`), and every use
case, route, frame handler and activity takes what it needs from it — so nothing builds a
second Redis client, message store or LLM pool behind anyone's back. What a process does not
use costs nothing until first touched (an LLM pool makes no connection until asked).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from chatee.bus import EventBus
from chatee.config import Settings
from chatee.db import create_engine, session_factory
from chatee.llm import ClientPool
from chatee.mcp import McpManager, persist_tools
from chatee.messaging.service import Messenger
from chatee.messaging.stores import MessageStore, create_store
from chatee.rag.search import Retriever
from chatee.ratelimit import Limiter
from chatee.redis import connect_redis


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]  # `async with sessionmaker() as db:`
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
    def create(cls, settings: Settings, temporal: Client) -> Services:
        engine = create_engine(settings.sqlalchemy_url())
        sessionmaker = session_factory(engine)
        redis = connect_redis(settings)
        llm = ClientPool(settings)
        messages = create_store(settings, sessionmaker)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
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
        await self.engine.dispose()
