"""The conversation layer on both databases (SQLite and MariaDB) with the real Redis cache:
one private chat per pair under a race, roles, read markers, unread counts, contacts, and
cache invalidation on every write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from chatee.db import create_engine, session_factory
from chatee.errors import ChateeError
from chatee.ids import new_id
from chatee.messaging import conversations as conv
from chatee.messaging.cache import Cache, agent_key, members_key, watch_agent_writes
from chatee.messaging.conversations import Edit, Member, View
from chatee.messaging.ledger import Factory
from chatee.messaging.stores.sql import SqlMessageStore
from chatee.messaging.types import Draft
from chatee.models import Agent, User


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Factory]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def cache(redis: Redis) -> Cache:
    return Cache(redis, 60)


# The rules of membership changes, and their writes alone (the use cases in
# chatee.messaging.changes write each in the transaction that records it for the members).


async def write(db: Factory, cache: Cache, edit: Edit) -> None:
    async with db() as session:
        await edit.write(session)
        await session.commit()
    await cache.delete(*edit.keys)


async def add_members(
    db: Factory, cache: Cache, view: View, actor: int, ids: list[int], role: str, limit: int
) -> list[Member]:
    edit = await conv.plan_add(db, view, actor, ids, role, limit)
    if edit is None:
        return []
    await write(db, cache, edit)
    return edit.members


async def remove_member(db: Factory, cache: Cache, view: View, actor: int, member: int) -> None:
    await write(db, cache, await conv.plan_removal(db, view, actor, member))


async def set_role(
    db: Factory, cache: Cache, view: View, actor: int, member: int, role: str
) -> None:
    await write(db, cache, conv.plan_role(view, actor, member, role))


async def users(db: Factory, count: int) -> list[int]:
    ids = [new_id() for _ in range(count)]
    async with db() as session:
        session.add_all(User(id=i, username=f"c-{i}", password_hash="-") for i in ids)
        await session.commit()
    return ids


async def agent_of(db: Factory, owner: int, name: str = "helper") -> int:
    agent_id = new_id()
    async with db() as session:
        session.add(Agent(id=agent_id, owner_id=owner, name=name, provider="openai", model="m"))
        await session.commit()
    return agent_id


async def test_racing_opens_of_a_private_chat_make_one(db: Factory) -> None:
    a, b = await users(db, 2)
    opened = await asyncio.gather(
        *(conv.create_private(db, a, b) for _ in range(3)),
        *(conv.create_private(db, b, a) for _ in range(3)),
    )
    assert len({c.id for c, _ in opened}) == 1
    assert [created for _, created in opened].count(True) == 1


async def test_roles_gate_member_changes(db: Factory, cache: Cache) -> None:
    owner, admin, member, outsider = await users(db, 4)
    group = await conv.create_group(db, owner, "g", [admin, member], max_members=4)
    view = await conv.visible_view(db, cache, group.id, owner)
    await set_role(db, cache, view, owner, admin, "admin")
    view = await conv.visible_view(db, cache, group.id, admin)  # invalidated: fresh roles
    assert view.role(admin) == "admin"
    with pytest.raises(ChateeError) as refused:
        await add_members(db, cache, view, member, [outsider], "member", 10)
    assert refused.value.status == 403
    (extra,) = await users(db, 1)
    with pytest.raises(ChateeError) as full:
        await add_members(db, cache, view, admin, [outsider, extra], "member", 4)
    assert full.value.status == 409
    with pytest.raises(ChateeError) as unknown:
        await add_members(db, cache, view, admin, [new_id()], "member", 4)
    assert unknown.value.status == 422
    await add_members(db, cache, view, admin, [outsider], "member", 4)
    view = await conv.visible_view(db, cache, group.id, outsider)
    assert view.user_ids() == sorted([owner, admin, member, outsider])
    with pytest.raises(ChateeError):
        await remove_member(db, cache, view, admin, owner)
    await remove_member(db, cache, view, owner, owner)  # the owner leaves
    view = await conv.visible_view(db, cache, group.id, admin)
    assert view.role(admin) == "owner" and owner not in view.members
    with pytest.raises(ChateeError) as gone:
        await conv.visible_view(db, cache, group.id, owner)
    assert gone.value.status == 404


async def test_read_markers_and_unread_counts(db: Factory, cache: Cache) -> None:
    alice, bob = await users(db, 2)
    group = await conv.create_group(db, alice, "g", [bob], max_members=10)
    store = SqlMessageStore(db)
    for i in range(5):
        await store.append(Draft(group.id, alice, f"m{i}", f"k{i}"))
    listed = {x.conversation.id: x for x in await conv.list_for(db, bob, 50)}
    assert listed[group.id].unread == 5 and listed[group.id].role == "member"
    marks = await asyncio.gather(*(conv.mark_read(db, group.id, bob, s) for s in (2, 4, 3)))
    assert max(marks) == 4
    assert await conv.mark_read(db, group.id, bob, 1) == 4  # never backwards
    assert await conv.mark_read(db, group.id, bob, 99) == 5  # never past the end
    listed = {x.conversation.id: x for x in await conv.list_for(db, bob, 50)}
    assert (listed[group.id].unread, listed[group.id].last_read_seq) == (0, 5)
    thread = await conv.create_thread(
        db, await conv.visible_view(db, cache, group.id, bob), bob, "t"
    )
    await store.append(Draft(thread.id, bob, "in thread", "t1"))
    listed = {x.conversation.id: x for x in await conv.list_for(db, alice, 50)}
    assert listed[thread.id].unread == 1 and listed[thread.id].conversation.parent_id == group.id


async def test_contacts_are_people_in_small_conversations(db: Factory) -> None:
    me, friend, colleague, stranger = await users(db, 4)
    crowd = await users(db, 6)
    await conv.create_private(db, me, friend)
    await conv.create_group(db, me, "small", [colleague], max_members=10)
    await conv.create_group(db, me, "big", crowd, max_members=10)
    assert set(await conv.contacts(db, me, max_size=5)) == {friend, colleague}
    assert stranger not in await conv.contacts(db, me, max_size=100)


async def test_agents_join_only_with_their_owner(db: Factory, cache: Cache) -> None:
    owner, other = await users(db, 2)
    mine, theirs = await agent_of(db, owner), await agent_of(db, other)
    group = await conv.create_group(db, owner, "g", [mine], max_members=10)
    view = await conv.visible_view(db, cache, group.id, owner)
    assert view.agent_ids() == [mine] and view.user_ids() == [owner]
    with pytest.raises(ChateeError) as refused:
        await add_members(db, cache, view, owner, [theirs], "member", 10)
    assert refused.value.status == 422


async def test_cached_reads_are_dropped_by_writes(db: Factory, cache: Cache, redis: Redis) -> None:
    owner, newcomer = await users(db, 2)
    agent_id = await agent_of(db, owner, "before")
    watch_agent_writes(cache)
    assert (await conv.agent_config(db, cache, agent_id))["name"] == "before"
    assert await redis.exists(agent_key(agent_id))
    async with db() as session:  # any writer, not only the agents router
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        agent.name = "after"
        await session.commit()
    for _ in range(50):  # dropped once the commit's event has run
        if not await redis.exists(agent_key(agent_id)):
            break
        await asyncio.sleep(0.02)
    assert (await conv.agent_config(db, cache, agent_id))["name"] == "after"

    group = await conv.create_group(db, owner, "g", [], max_members=10)
    view = await conv.visible_view(db, cache, group.id, owner)
    assert await redis.exists(members_key(group.id))
    await add_members(db, cache, view, owner, [newcomer], "member", 10)
    assert not await redis.exists(members_key(group.id))
    assert (await conv.visible_view(db, cache, group.id, newcomer)).has_user(newcomer)
