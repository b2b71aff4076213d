"""User directory search (`GET /api/v1/users?q=`) at scale: p50/p95 of the search use case.

    python -m bench.user_search [--users 100000] [--queries 2000] [--db sqlite,mariadb]
                                [--out FILE]

For each database (a fresh SQLite file; a fresh database on the machine's MariaDB at
127.0.0.1:3306 when reachable), migrates the schema, seeds `--users` users in bulk (usernames
like `mira.tolsen417`, display names like `Mira Tolsen`, every tenth account deleted), then
times `chatee.people.search_users` — the very function the route calls — for prefixes of 1 to
5 characters taken from real usernames and display names, in any case, with the route's default
limit (20). It also records the query plans (SQLite `EXPLAIN QUERY PLAN`, MariaDB `EXPLAIN`) of
both prefix scans, to show they are index range scans. JSON on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from chatee import people
from chatee.migrate import upgrade_async
from chatee.models import User

_SYLLABLE_TEXT = "ka mi ra to len so vi an el mo ri ta na ju be lo sa fe di co ma ne pi ru ho"
SYLLABLES = _SYLLABLE_TEXT.split()
BATCH = 5000
LIMIT = 20


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def people_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for i in range(count):
        first, last = name(rng), name(rng)
        display = f"{first} {last}"
        deleted = i % 10 == 9
        rows.append(
            {
                "id": 10_000_000 + i,
                "username": f"{first.lower()}.{last.lower()}{i}",
                "display_name": display,
                "search_name": None if deleted else display.lower(),
                "password_hash": "!",
                "created_at": now,
                "deleted_at": now if deleted else None,
            }
        )
    return rows


async def seed(engine: AsyncEngine, rows: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    async with engine.begin() as conn:
        for i in range(0, len(rows), BATCH):
            await conn.execute(insert(User), rows[i : i + BATCH])
    if engine.dialect.name == "sqlite":
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
    else:
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE TABLE users"))
    return time.perf_counter() - started


def prefixes(rows: list[dict[str, Any]], count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        row = rng.choice(rows)
        source = row["username"] if rng.random() < 0.5 else row["display_name"]
        prefix = source[: rng.randint(1, 5)]
        out.append(prefix.upper() if rng.random() < 0.3 else prefix)
    return out


async def plans(engine: AsyncEngine, sample: str) -> dict[str, list[str]]:
    """The database's plan for each of the two prefix scans `search_users` runs."""
    out: dict[str, list[str]] = {}
    async with async_sessionmaker(engine)() as db:
        for column in (User.username, User.search_name):
            stmt = (
                select(User)
                .where(people._starts_with(db, column, sample), User.deleted_at.is_(None))
                .order_by(column)
                .limit(LIMIT)
            )
            compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
            rows = (await db.execute(text(prefix + str(compiled)))).all()
            out[column.key] = [" | ".join(str(v) for v in row) for row in rows]
    return out


async def run(db_name: str, url: str, users: int, queries: int) -> dict[str, Any]:
    log(f"{db_name}: migrating")
    await upgrade_async(url)
    engine = create_async_engine(url)
    try:
        rows = people_rows(users)
        log(f"{db_name}: seeding {users} users")
        seconds = await seed(engine, rows)
        factory = async_sessionmaker(engine, expire_on_commit=False)
        asked = prefixes(rows, queries)
        async with factory() as db:  # warm the connection and caches
            for q in asked[:50]:
                await people.search_users(db, q, LIMIT)
        timings, hits = [], []
        log(f"{db_name}: {queries} searches")
        async with factory() as db:
            for q in asked:
                started = time.perf_counter()
                found = await people.search_users(db, q, LIMIT)
                timings.append((time.perf_counter() - started) * 1000)
                hits.append(len(found))
                db.expunge_all()
        cuts = statistics.quantiles(timings, n=100)
        return {
            "users": users,
            "seed_seconds": round(seconds, 1),
            "queries": queries,
            "limit": LIMIT,
            "p50_ms": round(statistics.median(timings), 3),
            "p95_ms": round(cuts[94], 3),
            "p99_ms": round(cuts[98], 3),
            "max_ms": round(max(timings), 3),
            "mean_hits": round(statistics.mean(hits), 1),
            "plans": await plans(engine, "mi"),
        }
    finally:
        await engine.dispose()


def mariadb_reachable() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 3306)) == 0


async def mariadb(users: int, queries: int) -> dict[str, Any]:
    import aiomysql

    name_ = f"chatee_bench_{uuid.uuid4().hex[:10]}"
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name_} CHARACTER SET utf8mb4")
        url = f"mysql+aiomysql://root@127.0.0.1:3306/{name_}?charset=utf8mb4"
        return await run("mariadb", url, users, queries)
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name_}")
        conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--db", default="sqlite,mariadb")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "bench": "user_search",
        "machine": {"python": platform.python_version(), "cpus": platform.machine()},
        "results": {},
    }
    wanted = args.db.split(",")
    if "sqlite" in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            result["results"]["sqlite"] = await run("sqlite", url, args.users, args.queries)
    if "mariadb" in wanted:
        if mariadb_reachable():
            result["results"]["mariadb"] = await mariadb(args.users, args.queries)
        else:
            log("no MariaDB at 127.0.0.1:3306: skipped")
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        args.out.write_text(out + "\n")


if __name__ == "__main__":
    asyncio.run(main())
