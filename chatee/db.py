"""Async SQLAlchemy engine and sessions over aiomysql or aiosqlite — one code path for both."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from chatee.config import Pool


def _bind_bytes_on_aiomysql() -> None:
    """aiomysql 0.3.2 escapes `bytes` with a PyMySQL helper that PyMySQL 1.2 replaced by a
    placeholder string, so binding any BLOB (uploads, embeddings) fails on MySQL; use
    PyMySQL's own `escape_bytes` (`_binary X'…'`) instead."""
    try:
        import aiomysql.connection as connection
        from pymysql.converters import escape_bytes
    except ImportError:  # pragma: no cover - MySQL driver not installed
        return
    if not callable(getattr(connection, "escape_bytes_prefixed", None)):
        connection.escape_bytes_prefixed = escape_bytes  # type: ignore[attr-defined]


_bind_bytes_on_aiomysql()


SQLITE_CACHE_KIB = 64 * 1024  # page cache per connection (SQLite's default: 2 MiB)


def pool_options(pool: Pool) -> dict[str, Any]:
    return {
        "pool_size": pool.size,
        "max_overflow": pool.max_overflow,
        "pool_timeout": pool.timeout_seconds,
        "pool_recycle": pool.recycle_seconds,
    }


def create_engine(url: str, pool: Pool | None = None, **kwargs: Any) -> AsyncEngine:
    """An engine with `pool`'s sizes (SQLAlchemy's defaults without one: migrations, tools)."""
    if pool:
        kwargs = {**pool_options(pool), **kwargs}
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            # WAL lets the API read while a worker writes; several processes share the file.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # A send writes into every recipient's inbox: one hot leaf page per user in each
            # inbox index. SQLite's default 2 MiB cache holds those of a few hundred users;
            # past that every insert re-reads its page and writes went 0.23 -> 0.58 ms each
            # with 1,000 users (bench/chat_fanout.py). 64 MiB is a bound, not an allocation.
            # (Checkpointing every 10,000 WAL pages instead of 1,000 helped at saturation but
            # made the p99 at ordinary rates 25-40 ms instead of 8-18: left at the default.)
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
