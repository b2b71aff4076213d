"""The message store contract, run against every implementation: SQL on SQLite and MariaDB,
and HBase when `CHATEE_TEST_HBASE_HOST` names a Thrift server (there is none on CI machines;
the HBase runs are skipped, never faked)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.messaging.ledger import ConversationGone, Factory, _known_counters
from chatee.messaging.sqlite_commit import _run_batch
from chatee.messaging.stores import MessageStore
from chatee.messaging.types import Draft
from chatee.models import Conversation, ConversationMessage

HBASE_HOST = os.environ.get("CHATEE_TEST_HBASE_HOST")


@pytest.fixture(params=["sql", "hbase"])
async def store(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[tuple[MessageStore, Factory]]:
    engine = create_engine(database_url)
    factory = session_factory(engine)
    made: MessageStore
    if request.param == "sql":
        from chatee.messaging.stores.sql import SqlMessageStore

        made = SqlMessageStore(factory)
    else:
        if not HBASE_HOST:
            pytest.skip("no HBase here: set CHATEE_TEST_HBASE_HOST to a Thrift server to run")
        if "sqlite" not in database_url:
            pytest.skip("the HBase store's ledger is exercised on SQLite only")
        from chatee.messaging.stores.hbase import HBaseMessageStore

        host, _, port = HBASE_HOST.partition(":")
        made = HBaseMessageStore(
            factory, host=host, port=int(port or 9090), table_prefix=f"t{uuid.uuid4().hex[:8]}"
        )
    yield made, factory
    if request.param == "hbase":
        await _drop_hbase_tables(made)
    await made.close()
    await engine.dispose()


async def _drop_hbase_tables(made: MessageStore) -> None:
    def drop() -> None:
        with made.pool.connection() as conn:  # type: ignore[attr-defined]
            for name in ("messages", "inbox"):
                conn.delete_table(name, disable=True)

    await asyncio.to_thread(drop)


async def conversation(factory: Factory) -> int:
    conversation_id = new_id()
    async with factory() as db:
        db.add(Conversation(id=conversation_id, type="group", created_by=1, member_count=3))
        await db.commit()
    return conversation_id


def draft(conversation_id: int, sender: int, text: str, client: str | None = None) -> Draft:
    return Draft(conversation_id, sender, text, client or uuid.uuid4().hex)


async def test_append_numbers_each_conversation_from_one(store) -> None:
    s, factory = store
    a, b = await conversation(factory), await conversation(factory)
    sender = new_id()
    seqs_a = [(await s.append(draft(a, sender, f"a{i}")))[0].seq for i in range(3)]
    seqs_b = [(await s.append(draft(b, sender, f"b{i}")))[0].seq for i in range(2)]
    assert seqs_a == [1, 2, 3] and seqs_b == [1, 2]


async def test_append_is_idempotent_per_sender_and_client_msg_id(store) -> None:
    s, factory = store
    c = await conversation(factory)
    alice, bob = new_id(), new_id()
    first, created = await s.append(draft(c, alice, "hello", "c-1"))
    again, created_again = await s.append(draft(c, alice, "hello", "c-1"))
    assert created and not created_again
    assert again == first
    other, other_created = await s.append(draft(c, bob, "hi", "c-1"))  # another sender's c-1
    assert other_created and other.id != first.id and other.seq == 2
    nxt, _ = await s.append(draft(c, alice, "next"))
    assert nxt.seq == 3  # the resend took no number


async def test_concurrent_appends_get_distinct_gap_free_seqs(store) -> None:
    s, factory = store
    c = await conversation(factory)
    sender = new_id()
    results = await asyncio.gather(*(s.append(draft(c, sender, f"m{i}")) for i in range(20)))
    assert sorted(m.seq for m, _ in results) == list(range(1, 21))
    dupes = await asyncio.gather(*(s.append(draft(c, sender, "same", "dup")) for _ in range(6)))
    assert len({m.id for m, _ in dupes}) == 1
    assert [created for _, created in dupes].count(True) == 1
    assert (await s.page(c, None, 1))[0].seq == 21


async def test_concurrent_appends_fail_alone(store) -> None:
    """Appends at once (on SQLite, group-committed: a few transactions of many writes each):
    resends and a send to a missing conversation fail alone, every other write still commits,
    and the numbers the failures took are given back."""
    s, factory = store
    c = await conversation(factory)
    sender = new_id()
    firsts = [(await s.append(draft(c, sender, f"first{i}", f"k{i}")))[0] for i in range(3)]
    sends = [("new", draft(c, sender, f"m{i}")) for i in range(40)]
    sends += [("resend", draft(c, sender, "again", f"k{i % 3}")) for i in range(6)]
    sends += [("race", draft(c, sender, "twice", "race")) for _ in range(2)]  # both in flight
    sends += [("gone", draft(new_id(), sender, "nobody home"))]
    random.Random(7).shuffle(sends)
    results = await asyncio.gather(*(s.append(d) for _, d in sends), return_exceptions=True)
    by_kind: dict[str, list] = {}
    for (kind, _), result in zip(sends, results, strict=True):
        by_kind.setdefault(kind, []).append(result)
    assert [type(r) for r in by_kind["gone"]] == [ConversationGone]
    assert all(created for _, created in by_kind["new"])
    for (kind, d), result in zip(sends, results, strict=True):
        if kind == "resend":  # the first send, not a second message
            assert result == (firsts[int(d.client_msg_id[1:])], False)
    race = by_kind["race"]
    assert sorted(created for _, created in race) == [False, True]
    assert race[0][0] == race[1][0]
    seqs = [m.seq for m, _ in by_kind["new"]] + [race[0][0].seq]
    assert sorted(seqs) == list(range(4, 45))  # 1..3 were the firsts: gap-free, no duplicates
    async with factory() as db:
        count = select(func.count()).where(ConversationMessage.conversation_id == c)
        assert await db.scalar(count) == 44


async def test_concurrent_deliveries_retry_missing_counters_alone(store) -> None:
    """Deliveries at once to overlapping users, some of whose counter rows are missing though
    the process believes they exist: those deliveries fail alone and retry, the others commit,
    and every inbox stays gap-free."""
    s, factory = store
    c = await conversation(factory)
    users = [new_id() for _ in range(8)]
    _known_counters(factory).update(users[6:])  # stale memory: they have no counter row
    messages = [(await s.append(draft(c, users[0], f"m{i}")))[0] for i in range(16)]
    audiences = [users[i % 4 : i % 4 + 5] for i in range(16)]  # half of them reach users[6:]
    await asyncio.gather(*(s.deliver(m, a) for m, a in zip(messages, audiences, strict=True)))
    for user in users:
        expected = {m.id for m, a in zip(messages, audiences, strict=True) if user in a}
        items = await s.inbox(user, 0, 100)
        assert [i.inbox_seq for i in items] == list(range(1, len(expected) + 1))
        assert {i.message.id for i in items} == expected


async def test_page_is_newest_first_and_pages_by_seq(store) -> None:
    s, factory = store
    c = await conversation(factory)
    sender = new_id()
    for i in range(1, 8):
        await s.append(draft(c, sender, f"m{i}"))
    newest = await s.page(c, None, 3)
    assert [m.content for m in newest] == ["m7", "m6", "m5"]
    older = await s.page(c, newest[-1].seq, 3)
    assert [m.seq for m in older] == [4, 3, 2]
    assert [m.seq for m in await s.page(c, 2, 10)] == [1]
    assert await s.page(c, 1, 10) == []
    assert await s.page(await conversation(factory), None, 10) == []


async def test_get_returns_the_stored_message(store) -> None:
    s, factory = store
    c = await conversation(factory)
    d = Draft(c, new_id(), "body ✓", "k", sender_type="agent", meta={"turn_id": "7"})
    message, _ = await s.append(d)
    got = await s.get(message.id)
    assert got is not None
    assert (got.content, got.sender_type, got.meta, got.seq) == (
        "body ✓",
        "agent",
        {"turn_id": "7"},
        1,
    )
    assert got.created_at.tzinfo is not None
    assert await s.get(new_id()) is None


async def test_append_to_a_missing_conversation_fails(store) -> None:
    s, _ = store
    with pytest.raises(ConversationGone):
        await s.append(draft(new_id(), new_id(), "nobody home"))


async def test_deliver_numbers_each_inbox_gap_free_across_conversations(store) -> None:
    s, factory = store
    a, b = await conversation(factory), await conversation(factory)
    u1, u2 = new_id(), new_id()
    m1, _ = await s.append(draft(a, u1, "one"))
    m2, _ = await s.append(draft(b, u2, "two"))
    m3, _ = await s.append(draft(a, u2, "three"))
    await s.deliver(m1, [u1, u2])
    await s.deliver(m2, [u2])
    await s.deliver(m3, [u1, u2])
    one = await s.inbox(u1, 0, 10)
    two = await s.inbox(u2, 0, 10)
    assert [(i.inbox_seq, i.message.content) for i in one] == [(1, "one"), (2, "three")]
    assert [(i.inbox_seq, i.message.content) for i in two] == [(1, "one"), (2, "two"), (3, "three")]
    assert [i.message.conversation_id for i in two] == [a, b, a]
    nobody = new_id()
    assert await s.inbox_heads([u1, u2, nobody]) == {u1: 2, u2: 3, nobody: 0}


async def test_deliver_is_idempotent_per_user_and_message(store) -> None:
    s, factory = store
    c = await conversation(factory)
    users = [new_id() for _ in range(5)]
    message, _ = await s.append(draft(c, users[0], "once"))
    first = await s.deliver(message, users[:3])
    retried = await s.deliver(message, users)  # a retried batch, with two more members
    assert {i.user_id: i.inbox_seq for i in first}.items() <= {
        i.user_id: i.inbox_seq for i in retried
    }.items()
    assert len(retried) == 5
    for user in users:
        assert [i.inbox_seq for i in await s.inbox(user, 0, 10)] == [1]


async def test_concurrent_deliveries_keep_every_inbox_gap_free(store) -> None:
    s, factory = store
    c = await conversation(factory)
    users = [new_id() for _ in range(6)]
    messages = [(await s.append(draft(c, users[0], f"m{i}")))[0] for i in range(12)]
    # overlapping audiences, and every message delivered twice at the same time
    work = [s.deliver(m, users[i % 3 :]) for i, m in enumerate(messages)] * 2
    await asyncio.gather(*work)
    for n, user in enumerate(users):
        items = await s.inbox(user, 0, 100)
        expected = sum(1 for i in range(12) if n >= i % 3)
        assert [i.inbox_seq for i in items] == list(range(1, expected + 1))
        assert len({i.message.id for i in items}) == expected


async def test_inbox_reads_after_a_cursor_in_pages(store) -> None:
    s, factory = store
    c = await conversation(factory)
    user = new_id()
    for i in range(7):
        message, _ = await s.append(draft(c, user, f"m{i}"))
        await s.deliver(message, [user])
    page1 = await s.inbox(user, 0, 3)
    page2 = await s.inbox(user, page1[-1].inbox_seq, 3)
    page3 = await s.inbox(user, page2[-1].inbox_seq, 3)
    assert [i.inbox_seq for i in page1 + page2 + page3] == list(range(1, 8))
    assert [i.message.content for i in page3] == ["m6"]
    assert await s.inbox(user, 7, 3) == []
    json_item = page1[0].to_json()
    assert json_item["inbox_seq"] == 1 and json_item["message"]["content"] == "m0"
    assert json_item["conversation_id"] == str(c)


async def test_fanout_state_is_pending_until_marked(store) -> None:
    s, factory = store
    c = await conversation(factory)
    message, _ = await s.append(draft(c, new_id(), "x"))
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert message.id in await s.pending_fanouts(later, 10_000)
    assert message.id not in await s.pending_fanouts(datetime.now(UTC) - timedelta(hours=1))
    await s.mark_fanned_out(message.id)
    assert message.id not in await s.pending_fanouts(later, 10_000)
    other, _ = await s.append(draft(c, new_id(), "y"))
    await s.deliver(other, [new_id()])  # a first batch
    assert other.id in await s.pending_fanouts(later, 10_000)
    await s.deliver(other, [new_id()], finish=True)  # the last batch marks it done
    assert other.id not in await s.pending_fanouts(later, 10_000)


async def test_append_delivered_stores_delivers_and_finishes_in_one_step(store) -> None:
    s, factory = store
    c = await conversation(factory)
    users = [new_id() for _ in range(4)]
    await s.deliver((await s.append(draft(c, users[0], "before")))[0], users[:2])
    message, created, items = await s.append_delivered(draft(c, users[0], "both", "k1"), users)
    assert created and message.seq == 2
    assert {i.user_id: i.inbox_seq for i in items} == dict(zip(users, [2, 2, 1, 1], strict=True))
    assert message.id not in await s.pending_fanouts(datetime.now(UTC) + timedelta(seconds=5))
    for user, expected in zip(users, [["before", "both"]] * 2 + [["both"]] * 2, strict=True):
        assert [i.message.content for i in await s.inbox(user, 0, 10)] == expected
    # a resend gets the first send and delivers nothing again
    again, created, items = await s.append_delivered(draft(c, users[0], "both", "k1"), users)
    assert (again.id, created, items) == (message.id, False, [])
    assert [i.inbox_seq for i in await s.inbox(users[3], 0, 10)] == [1]
    with pytest.raises(ConversationGone):
        await s.append_delivered(draft(new_id(), users[0], "nobody home"), users)


async def test_concurrent_append_delivered_keep_seqs_and_inboxes_gap_free(store) -> None:
    s, factory = store
    rooms = [await conversation(factory) for _ in range(3)]
    users = [new_id() for _ in range(6)]
    _known_counters(factory).update(users[:2])  # stale memory: counter rows are missing
    sends = [
        s.append_delivered(draft(rooms[n % 3], users[n % 6], f"m{n}"), users[n % 3 :])
        for n in range(30)
    ]
    results = await asyncio.gather(*sends)
    for room in rooms:
        seqs = sorted(m.seq for m, _, _ in results if m.conversation_id == room)
        assert seqs == list(range(1, 11))
    for n, user in enumerate(users):
        got = [i.inbox_seq for i in await s.inbox(user, 0, 100)]
        assert got == list(range(1, sum(1 for k in range(30) if n >= k % 3) + 1))


def test_hbase_row_keys_scan_newest_first_and_spread_over_salt_buckets() -> None:
    """The key layout alone (no server needed): what makes the HBase scans single ranges."""
    from chatee.messaging.stores.hbase import inbox_key, message_key, salt

    conversation = new_id()
    keys = [message_key(conversation, seq, 16) for seq in (1, 2, 10, 300)]
    assert sorted(keys) == list(reversed(keys))  # higher seq sorts first: newest-first scan
    assert len({k[:9] for k in keys}) == 1  # one conversation, one contiguous prefix
    inbox = [inbox_key(conversation, seq, 16) for seq in (1, 2, 10, 300)]
    assert sorted(inbox) == inbox  # ascending: sync after N is a forward scan
    ids = [new_id() for _ in range(2000)]  # consecutive snowflakes, as new chats get them
    buckets = {salt(i, 16) for i in ids}
    assert len(buckets) == 16  # spread over every bucket, not piled on the last region
    assert all(len(salt(i, 16)) == 1 for i in ids[:10])


def test_a_batch_that_cannot_commit_reports_every_op_failed(tmp_path) -> None:
    """SQLite group commit: one op's failure is undone alone, but when the COMMIT itself fails
    (here a deferred foreign key) nothing is committed and no op is reported done."""
    sq = sqlite3.connect(tmp_path / "batch.db")
    sq.execute("PRAGMA foreign_keys = ON")
    sq.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    sq.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, "
        "parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    sq.commit()

    def batch(*statements: str) -> list:
        return _run_batch(sq, [lambda c, sql=sql: c.execute(sql) for sql in statements])

    outcomes = batch("INSERT INTO parent VALUES (1)", "INSERT INTO parent VALUES (1)",
                     "INSERT INTO parent VALUES (2)")  # fmt: skip
    assert [type(e) for _, e in outcomes] == [type(None), sqlite3.IntegrityError, type(None)]
    assert sq.execute("SELECT id FROM parent ORDER BY id").fetchall() == [(1,), (2,)]

    with pytest.raises(sqlite3.IntegrityError):  # the child's parent does not exist
        batch("INSERT INTO parent VALUES (3)", "INSERT INTO child VALUES (1, 99)")
    assert not sq.in_transaction
    assert sq.execute("SELECT id FROM parent ORDER BY id").fetchall() == [(1,), (2,)]
    sq.close()


async def test_deliver_puts_what_goes_before_first_in_the_same_write(store) -> None:
    """A fan-out batch delivers the conversation's earlier pending items first (`before`), to
    those who lack them: each inbox gets them in order, and no entry twice."""
    s, factory = store
    c = await conversation(factory)
    users = [new_id() for _ in range(3)]
    first, second, third = [(await s.append(draft(c, users[0], t)))[0] for t in "abc"]
    await s.deliver(first, users[:1])
    # `third`'s batch: `first` lacks two users, `second` all three
    items = await s.deliver(third, users, before=[(first, users[1:]), (second, users)])
    assert [(i.user_id, i.message.content) for i in items[:5]] == [
        (users[1], "a"), (users[2], "a"), (users[0], "b"), (users[1], "b"), (users[2], "b"),
    ]  # fmt: skip
    assert [i.message.content for i in items[5:]] == ["c"] * 3
    await s.deliver(second, users)  # `second`'s own fan-out, later: finds every entry in place
    for user in users:
        inbox = await s.inbox(user, 0, 10)
        assert [(i.inbox_seq, i.message.content) for i in inbox] == [(1, "a"), (2, "b"), (3, "c")]


async def test_a_message_written_in_place_is_read_so_until_it_is_deleted(store) -> None:
    """A streaming reply's text so far, kept in its place: what `get` and `page` return; once
    the message is a tombstone, writing in place changes nothing."""
    s, factory = store
    c = await conversation(factory)
    agent, user = new_id(), new_id()
    reply, _ = await s.append(
        Draft(c, agent, "", "turn:1", "agent", {"streaming": True, "deltas": 0})
    )
    so_far = replace(reply, content="Hello, wor", meta={"streaming": True, "deltas": 3})
    assert await s.write_in_place(so_far)
    got = await s.get(reply.id)
    assert got is not None and (got.content, got.meta) == ("Hello, wor", so_far.meta)
    assert [m.content for m in await s.page(c, None, 10)] == ["Hello, wor"]
    await s.delete(got, user, [user])
    assert not await s.write_in_place(replace(so_far, content="Hello, world"))
    gone = await s.get(reply.id)
    assert gone is not None and gone.deleted and not gone.content
