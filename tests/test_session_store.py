"""Data access against both databases: users, idempotent message writes, turn context, paging,
ownership and large unicode content."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatee import agents, people, session_store
from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.models import Agent, Message, Session


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def add_message(
    factory: async_sessionmaker[AsyncSession],
    session_id: int,
    role: str,
    turn_id: int,
    content: str | None = None,
) -> Message:
    key = f"test:{new_id()}"
    return await session_store.store_message_once(
        factory,
        idempotency_key=key,
        session_id=session_id,
        role=role,
        content=content if content is not None else key,
        turn_id=turn_id,
    )


async def make_agent_and_session(
    factory: async_sessionmaker[AsyncSession], user_id: int
) -> tuple[Agent, Session]:
    async with factory() as db:
        agent = Agent(id=new_id(), owner_id=user_id, name="a", provider="openai", model="m")
        session = Session(id=new_id(), user_id=user_id, agent_id=agent.id, workflow_id="wf")
        db.add_all([agent, session])
        await db.commit()
    return agent, session


async def test_create_user_and_duplicate_name(factory: async_sessionmaker[AsyncSession]) -> None:
    name = f"u{new_id()}"
    async with factory() as db:
        user = await people.create_user(db, name, "hash-1")
    async with factory() as db:
        found = await people.user_by_name(db, name)
        assert found is not None
        assert (found.id, found.password_hash) == (user.id, "hash-1")
        with pytest.raises(people.UsernameTaken):
            await people.create_user(db, name, "hash-2")
        # the session is usable after the failed insert, and the first row is untouched
        again = await people.user_by_name(db, name)
        assert again is not None and again.password_hash == "hash-1"
        other = await people.create_user(db, name + "x", "hash-3")
        assert other.id != user.id
    async with factory() as db:
        assert await people.user_by_name(db, f"missing{new_id()}") is None


async def test_store_message_once_is_idempotent_under_concurrency(
    factory: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id, turn_id, key = new_id(), new_id(), f"idem:{new_id()}"

    async def attempt(n: int) -> Message:
        return await session_store.store_message_once(
            factory,
            idempotency_key=key,
            session_id=session_id,
            role="assistant",
            content=f"attempt {n}",
            turn_id=turn_id,
            usage={"n": n},
        )

    # hold every attempt after its lookup until all 10 have looked, so all of them try to insert
    lookup = session_store._by_key
    first_lookups = asyncio.Barrier(10)
    lookups = 0

    async def gated_lookup(db: AsyncSession, k: str) -> Message | None:
        nonlocal lookups
        row = await lookup(db, k)
        lookups += 1
        if lookups <= 10:
            assert row is None
            await asyncio.wait_for(first_lookups.wait(), 10)
        return row

    monkeypatch.setattr(session_store, "_by_key", gated_lookup)
    results = await asyncio.gather(*(attempt(n) for n in range(10)))
    assert lookups == 10 + 9  # the nine losers each looked again after their insert failed
    monkeypatch.setattr(session_store, "_by_key", lookup)
    assert len({m.id for m in results}) == 1
    async with factory() as db:
        rows = (
            (await db.execute(select(Message).where(Message.session_id == session_id)))
            .scalars()
            .all()
        )
    assert len(rows) == 1
    assert rows[0].id == results[0].id
    assert rows[0].idempotency_key == key
    assert all(m.content == rows[0].content for m in results)

    # a later retry returns the stored row, not a new one with its own content
    retry = await attempt(99)
    assert retry.id == rows[0].id
    assert retry.content == rows[0].content != "attempt 99"
    async with factory() as db:
        count = await db.scalar(
            select(func.count()).select_from(Message).where(Message.session_id == session_id)
        )
    assert count == 1


async def test_turn_context_never_shows_later_turns(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    session_id = new_id()
    t1, t2, t3 = new_id(), new_id(), new_id()
    m1 = await add_message(factory, session_id, "user", t1)
    m2 = await add_message(factory, session_id, "user", t2)  # queued behind t1

    async def context(turn: int, limit: int = 50) -> list[int]:
        async with factory() as db:
            return [m.id for m in await session_store.turn_context(db, session_id, turn, limit)]

    assert await context(t1) == [m1.id]
    assert await context(t2) == [m1.id, m2.id]

    a1 = await add_message(factory, session_id, "assistant", t1)  # t1's reply, after m2
    assert a1.id > m2.id
    assert await context(t1) == [m1.id, a1.id]
    assert await context(t2) == [m1.id, a1.id, m2.id]

    m3 = await add_message(factory, session_id, "user", t3)
    a2 = await add_message(factory, session_id, "assistant", t2)
    assert await context(t1) == [m1.id, a1.id]
    assert await context(t2) == [m1.id, a1.id, m2.id, a2.id]
    assert await context(t3) == [m1.id, a1.id, m2.id, a2.id, m3.id]
    # the limit keeps the newest messages, still in turn order
    assert await context(t2, limit=2) == [m2.id, a2.id]
    assert await context(t3, limit=3) == [m2.id, a2.id, m3.id]
    # another session's messages never appear
    await add_message(factory, new_id(), "user", t1)
    assert await context(t1) == [m1.id, a1.id]


async def test_message_page_newest_first_without_gaps(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    session_id = new_id()
    stored = [await add_message(factory, session_id, "user", new_id()) for _ in range(23)]
    await add_message(factory, new_id(), "user", new_id())  # another session
    expected = sorted((m.id for m in stored), reverse=True)

    seen: list[int] = []
    before: int | None = None
    pages = 0
    while True:
        async with factory() as db:
            page = [m.id for m in await session_store.message_page(db, session_id, before, 5)]
        if not page:
            break
        pages += 1
        assert len(page) <= 5
        assert page == sorted(page, reverse=True)
        if before is not None:
            assert all(i < before for i in page)
        seen.extend(page)
        before = page[-1]
    assert pages == 5
    assert seen == expected  # no overlap, no gap

    async with factory() as db:
        first = await session_store.message_page(db, session_id, None, 3)
        assert [m.id for m in first] == expected[:3]
        assert await session_store.message_page(db, session_id, expected[-1], 10) == []


async def test_owned_rows_are_hidden_from_other_users(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    owner, stranger = new_id(), new_id()
    agent, session = await make_agent_and_session(factory, owner)
    async with factory() as db:
        found_agent = await agents.find_owned_agent(db, owner, agent.id)
        found_session = await session_store.owned_session(db, owner, session.id)
        assert found_agent is not None and found_agent.id == agent.id
        assert found_session is not None and found_session.id == session.id
        assert await agents.find_owned_agent(db, stranger, agent.id) is None
        assert await session_store.owned_session(db, stranger, session.id) is None
        assert await agents.find_owned_agent(db, owner, new_id()) is None
        assert await session_store.owned_session(db, owner, new_id()) is None
        # an agent id is not a session id and vice versa
        assert await session_store.owned_session(db, owner, agent.id) is None
        assert await agents.find_owned_agent(db, owner, session.id) is None


async def test_message_by_client_id(factory: async_sessionmaker[AsyncSession]) -> None:
    session_id, other_session = new_id(), new_id()
    async with factory() as db:
        msg = Message(
            id=new_id(),
            session_id=session_id,
            role="user",
            content="hi",
            turn_id=new_id(),
            client_msg_id="c-1",
        )
        db.add(msg)
        await db.commit()
    async with factory() as db:
        found = await session_store.message_by_client_id(db, session_id, "c-1")
        assert found is not None and found.id == msg.id
        assert await session_store.message_by_client_id(db, other_session, "c-1") is None
        assert await session_store.message_by_client_id(db, session_id, "c-2") is None


UNICODE_SAMPLE = (
    "😀🎉👩‍👩‍👧‍👦🇺🇦 中文字符測試 日本語のテキスト 한국어 "
    "Ünïcödé ñ e\u0301 \u200b zero-width, RTL עברית العربية, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚, "
    "quotes ' \" ` \\ %s %% \t tab\r\nnewline\n"
)


async def test_large_unicode_content_round_trips(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    content = UNICODE_SAMPLE * (40 * 1024 // len(UNICODE_SAMPLE) + 1)
    assert len(content) > 32 * 1024
    assert len(content.encode()) > 64 * 1024  # beyond a plain MySQL TEXT column
    session_id = new_id()
    stored = await add_message(factory, session_id, "user", new_id(), content=content)
    async with factory() as db:
        row = await db.get(Message, stored.id)
        assert row is not None
        assert len(row.content) == len(content)
        assert row.content == content
        by_ctx = await session_store.turn_context(db, session_id, stored.turn_id, 10)
        assert [m.content for m in by_ctx] == [content]
