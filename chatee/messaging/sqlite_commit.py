"""SQLite group commit for the ledger (`chatee.messaging.ledger`).

On SQLite, appends and deliveries are group-committed: the writes queued while one batch runs
go together as the next, one transaction in one hop to aiosqlite's thread and one commit, each
write in a savepoint of its own. A send then pays a share of a hop and of a commit instead of
two of each, every hop waiting for a busy event loop to come round; the SQL, the locks and each
write's all-or-nothing are unchanged.

What one SQLite database needs for that — its writer lock, its batcher, the bind processors of
the columns written raw — is one `SqliteCommit`, made once per engine (`group_commit`). The
ledger keeps the retries and the path of every other database; `append_rows` and
`deliver_rows` are the raw-connection spelling of its `_append_once` and `_deliver_once` (and
`record_rows` with the `*_rows` mutations that of its `record_change` and mutations), so a
change to one is a change to the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.coalesce import Coalescer
from chatee.messaging.types import MESSAGE, Change, Draft, InboxRef, Item
from chatee.models import Conversation, ConversationMessage, InboxEntry, MessageChange, utcnow

T = TypeVar("T")
Factory = async_sessionmaker[AsyncSession]
Op = Callable[[sqlite3.Connection], Any]
_Outcome = tuple[Any, Exception | None]  # an op's result, or its exception


class SqliteCommit:
    """Group commit for one SQLite database: the writes queued while one batch ran are the
    next batch — one transaction, one hop, one commit (`_run_batch`), under `lock` so the
    generic path never interleaves."""

    def __init__(self, factory: Factory) -> None:
        self.factory = factory  # holds the engine: its id() is not reused while we are kept
        # one ledger write at a time per process (see `writing`)
        self.lock = asyncio.Lock()
        self.binds = Binds(factory.kw["bind"].dialect)
        self._batcher: Coalescer[Op, Any] = Coalescer(self._commit)

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """`op` in the next batch, on aiosqlite's thread: its result, or what it raised (its
        own writes undone, the batch's others committed)."""
        return await self._batcher(op)

    async def _commit(self, ops: list[Op]) -> list[_Outcome]:
        async with self.lock:
            return await _in_driver_thread(self.factory, lambda sq: _run_batch(sq, ops))


_commits: dict[int, SqliteCommit] = {}  # per bind; each keeps its engine alive


def group_commit(factory: Factory) -> SqliteCommit:
    """The one `SqliteCommit` of the SQLite database `factory` writes to."""
    bind = factory.kw["bind"]
    found = _commits.get(id(bind))
    if found is None:
        found = _commits[id(bind)] = SqliteCommit(factory)
    return found


def is_sqlite(factory: Factory) -> bool:
    bind = factory.kw.get("bind")
    return bind is not None and bind.dialect.name == "sqlite"


@contextlib.asynccontextmanager
async def writing(factory: Factory) -> AsyncIterator[None]:
    """On SQLite, one ledger write at a time per process (a batch of the group commit, or an
    `append` with `before_commit`): SQLite has one writer anyway, and waiting here is a queue,
    while waiting in SQLite's busy handler is sleep-and-poll (tens of ms of idle per collision).
    Other databases lock rows, so they go straight through."""
    if not is_sqlite(factory):
        yield
        return
    async with group_commit(factory).lock:
        yield


async def _in_driver_thread(factory: Factory, fn: Callable[[sqlite3.Connection], T]) -> T:
    """SQLite: run `fn` on aiosqlite's own thread and connection, in one hop.

    Through SQLAlchemy every statement is three or four hops between the event loop and
    aiosqlite's thread (cursor, execute, fetch, close), each waiting for a busy loop to come
    round; a send is a dozen statements. Here a whole batch of them is one hop, and `fn` owns
    the transaction (`_run_batch`; only the group commit calls this, holding the lock). It
    relies on aiosqlite's `_execute` and `_conn` (private; aiosqlite is pinned in
    requirements.lock, and the message-store contract tests run this path)."""
    async with factory() as db:
        conn = await db.connection()
        driver = (await conn.get_raw_connection()).driver_connection  # aiosqlite.Connection
        return await driver._execute(lambda: fn(driver._conn))


def _run_batch(sq: sqlite3.Connection, ops: list[Op]) -> list[_Outcome]:
    """On aiosqlite's thread: the ops as ONE transaction, each in a savepoint of its own.

    BEGIN IMMEDIATE comes first and takes the write lock (a savepoint opened outside a
    transaction would start one, and releasing it would commit). If anything but an op fails
    (BEGIN, a savepoint, COMMIT), it is all rolled back and raised, so no op is reported done
    that is not committed."""
    sq.execute("BEGIN IMMEDIATE")
    try:
        outcomes = [_in_savepoint(sq, op) for op in ops]
        sq.commit()
    except BaseException:
        if sq.in_transaction:
            sq.rollback()
        raise
    return outcomes


def _in_savepoint(sq: sqlite3.Connection, op: Op) -> _Outcome:
    """One op: if it raises (a resend's IntegrityError, missing counters), only its own
    writes are undone, and the others in the batch still commit."""
    sq.execute("SAVEPOINT op")
    try:
        result = op(sq)
    except Exception as exc:
        if not sq.in_transaction:  # SQLite dropped the whole transaction (full disk, I/O)
            raise
        sq.execute("ROLLBACK TO op")
        sq.execute("RELEASE op")
        return None, exc
    sq.execute("RELEASE op")
    return result, None


def transient(exc: sqlite3.OperationalError) -> bool:
    """A locked or busy database: worth another go."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Binds:
    """Bind processors of the columns written raw on SQLite (datetimes, JSON), taken from the
    models so values are stored exactly as SQLAlchemy stores them."""

    def __init__(self, dialect: Dialect) -> None:
        messages, conversations = ConversationMessage.__table__.c, Conversation.__table__.c
        self.created_at = messages.created_at.type.bind_processor(dialect) or (lambda v: v)
        self.meta = messages.meta.type.bind_processor(dialect) or (lambda v: v)
        self.last_message_at = conversations.last_message_at.type.bind_processor(dialect) or (
            lambda v: v
        )
        self.inbox_created_at = InboxEntry.__table__.c.created_at.type.bind_processor(dialect) or (
            lambda v: v
        )
        self.json = MessageChange.__table__.c.data.type.bind_processor(dialect) or (lambda v: v)


class MessageDeleted(Exception):
    """The message is a tombstone: it cannot be edited or reacted to."""


class TooManyReactions(Exception):
    """The message has as many different emoji as it may."""


class MissingCounters(Exception):
    """A delivery found users without a counter row (the process's memory of them was stale).
    Raised by both spellings of a delivery, `deliver_rows` here and the ledger's own."""

    def __init__(self, users: set[int]) -> None:
        self.users = users


def append_rows(
    sq: sqlite3.Connection,
    *,
    binds: Binds,
    draft: Draft,
    keep_content: bool,
    message_id: int,
    now: datetime,
    created: datetime,
    status: str = "pending",
) -> int | None:
    """The ledger's `_append_once` statements on the raw connection: the new `seq`, or None
    when the conversation is gone."""
    row = sq.execute(
        "UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ? "
        "WHERE id = ? RETURNING last_seq",
        (binds.last_message_at(now), draft.conversation_id),
    ).fetchall()  # drained: no statement left running at commit
    if not row:
        return None
    seq = row[0][0]
    sq.execute(
        "INSERT INTO conversation_messages (id, conversation_id, seq, sender_id, "
        "sender_type, client_msg_id, content, meta, fanout_status, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message_id,
            draft.conversation_id,
            seq,
            draft.sender_id,
            draft.sender_type,
            draft.client_msg_id,
            draft.content if keep_content else None,
            binds.meta(draft.meta),
            status,
            binds.created_at(created),
        ),
    )
    if draft.sender_type == "user":  # you have read what you wrote
        sq.execute(
            "INSERT INTO conversation_reads (conversation_id, user_id, last_read_seq) "
            "VALUES (?, ?, ?) ON CONFLICT (conversation_id, user_id) DO UPDATE SET "
            "last_read_seq = max(last_read_seq, excluded.last_read_seq)",
            (draft.conversation_id, draft.sender_id, seq),
        )
    return seq


def deliver_rows(
    sq: sqlite3.Connection,
    *,
    binds: Binds,
    item: Item,
    users: list[int],
    finish: bool,
    check: bool = True,
) -> tuple[list[InboxRef], list[InboxRef]]:
    """The ledger's `_deliver_once` statements on the raw connection, for a message's or a
    change's `item`. The batch holds the write lock (BEGIN IMMEDIATE), so it reads what was
    delivered before (unless the caller knows there is nothing: `check`), then bumps what is
    fresh."""
    existing: list[InboxRef] = []
    if check:
        existing = [
            InboxRef(*row)
            for row in sq.execute(
                "SELECT user_id, inbox_seq, message_id, conversation_id, seq, kind, change_id "
                "FROM inbox_entries WHERE message_id = ? AND change_id = ? "
                f"AND user_id IN ({', '.join('?' * len(users))})",
                [item.message_id, item.change_id, *users],
            ).fetchall()
        ]
    done = {r.user_id for r in existing}
    fresh = [u for u in users if u not in done]
    counters = dict(
        sq.execute(
            "UPDATE user_inbox_counters SET last_seq = last_seq + 1 "
            f"WHERE user_id IN ({', '.join('?' * len(fresh))}) RETURNING user_id, last_seq",
            fresh,
        ).fetchall()
        if fresh
        else ()
    )
    if len(counters) < len(fresh):
        raise MissingCounters(set(fresh) - set(counters))
    refs = [
        InboxRef(
            u, counters[u], item.message_id, item.conversation_id, item.seq, item.kind,
            item.change_id,
        )
        for u in fresh
    ]  # fmt: skip
    if refs:
        created = binds.inbox_created_at(utcnow())
        sq.executemany(
            "INSERT INTO inbox_entries (user_id, inbox_seq, message_id, conversation_id, "
            "seq, created_at, kind, change_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.user_id,
                    r.inbox_seq,
                    r.message_id,
                    r.conversation_id,
                    r.seq,
                    created,
                    r.kind,
                    r.change_id,
                )
                for r in refs
            ],  # fmt: skip
        )
    if finish:
        table = "conversation_messages" if item.kind == MESSAGE else "message_changes"
        sq.execute(f"UPDATE {table} SET fanout_status = 'done' WHERE id = ?", (item.id,))
    return refs, existing


# -- changes (the ledger's `record_change` and its mutations, on the raw connection) -------------


def record_rows(
    sq: sqlite3.Connection,
    *,
    binds: Binds,
    change: Change,
    mutate: Callable[[sqlite3.Connection, Binds], dict[str, Any] | None],
    users: list[int] | None,
) -> tuple[Change | None, list[InboxRef]]:
    """The mutation, the change's ledger row, and (`users` given) its inbox entries."""
    data = mutate(sq, binds)
    if data is None:
        return None, []
    change = replace(change, data=data)
    sq.execute(
        "INSERT INTO message_changes (id, conversation_id, message_id, seq, kind, actor_id, "
        "data, extra_users, fanout_status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            change.id, change.conversation_id, change.message_id, change.seq, change.kind,
            change.actor_id, binds.json(data), binds.json(list(change.extra_users) or None),
            "pending" if users is None else "done", binds.created_at(change.created_at),
        ),
    )  # fmt: skip
    refs: list[InboxRef] = []
    if users:
        refs, _ = deliver_rows(sq, binds=binds, item=change.item, users=users, finish=False,
                               check=False)  # fmt: skip
    return change, refs


def _live(sq: sqlite3.Connection, message_id: int) -> None:
    found = sq.execute(
        "SELECT 1 FROM conversation_messages WHERE id = ? AND deleted_at IS NULL", (message_id,)
    ).fetchall()
    if not found:
        raise MessageDeleted(message_id)


def edit_rows(
    sq: sqlite3.Connection, binds: Binds, *, message_id: int, content: str | None, at: datetime
) -> dict[str, Any]:
    if content is None:
        cur = sq.execute(
            "UPDATE conversation_messages SET edited_at = ? WHERE id = ? AND deleted_at IS NULL",
            (binds.created_at(at), message_id),
        )
    else:
        cur = sq.execute(
            "UPDATE conversation_messages SET edited_at = ?, content = ? "
            "WHERE id = ? AND deleted_at IS NULL",
            (binds.created_at(at), content, message_id),
        )
    if cur.rowcount == 0:
        raise MessageDeleted(message_id)
    return {}


def delete_rows(
    sq: sqlite3.Connection, binds: Binds, *, message_id: int, actor_id: int, at: datetime
) -> dict[str, Any] | None:
    cur = sq.execute(
        "UPDATE conversation_messages SET deleted_at = ?, deleted_by = ?, content = NULL "
        "WHERE id = ? AND deleted_at IS NULL",
        (binds.created_at(at), actor_id, message_id),
    )
    if cur.rowcount == 0:
        return None
    sq.execute("DELETE FROM message_reactions WHERE message_id = ?", (message_id,))
    return {"deleted_by": str(actor_id)}


def reaction_rows(
    sq: sqlite3.Connection,
    binds: Binds,
    *,
    message_id: int,
    user_id: int,
    emoji: str,
    add: bool,
    max_kinds: int,
) -> dict[str, Any] | None:
    _live(sq, message_id)
    mine = (message_id, emoji, user_id)
    where = "message_id = ? AND emoji = ? AND user_id = ?"
    if add:
        if sq.execute(f"SELECT 1 FROM message_reactions WHERE {where}", mine).fetchall():
            return None
        kinds = {
            row[0]
            for row in sq.execute(
                "SELECT DISTINCT emoji FROM message_reactions WHERE message_id = ?", (message_id,)
            ).fetchall()
        }
        if emoji not in kinds and len(kinds) >= max_kinds:
            raise TooManyReactions(message_id)
        sq.execute(
            "INSERT INTO message_reactions (message_id, emoji, user_id, created_at) "
            "VALUES (?, ?, ?, ?)",
            (*mine, binds.created_at(utcnow())),
        )
    elif sq.execute(f"DELETE FROM message_reactions WHERE {where}", mine).rowcount == 0:
        return None
    (count,) = sq.execute(
        "SELECT count(*) FROM message_reactions WHERE message_id = ? AND emoji = ?",
        (message_id, emoji),
    ).fetchone()
    return {"emoji": emoji, "added": add, "count": int(count)}
