"""SQLite group commit for the ledger (`chatee.messaging.ledger`).

On SQLite, appends and deliveries are group-committed: the writes queued while one batch runs
go together as the next, one transaction in one hop to aiosqlite's thread and one commit, each
write in a savepoint of its own. A send then pays a share of a hop and of a commit instead of
two of each, every hop waiting for a busy event loop to come round; the SQL, the locks and each
write's all-or-nothing are unchanged.

What one SQLite database needs for that — its writer lock, its batcher, the bind processors of
the columns written raw — is one `SqliteCommit`, made once per engine (`group_commit`). The
ledger keeps the retries and the path of every other database; `append_rows` and
`deliver_rows` are the raw-connection spelling of its `_append_once` and `_deliver_once`, so a
change to one is a change to the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.coalesce import Coalescer
from chatee.messaging.types import ChatMessage, Draft, InboxRef
from chatee.models import Conversation, ConversationMessage, InboxEntry, utcnow

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
    message: ChatMessage,
    users: list[int],
    finish: bool,
    check: bool = True,
) -> tuple[list[InboxRef], list[InboxRef]]:
    """The ledger's `_deliver_once` statements on the raw connection. The batch holds the
    write lock (BEGIN IMMEDIATE), so it reads what was delivered before (unless the caller
    knows there is nothing: `check`), then bumps what is fresh."""
    existing: list[InboxRef] = []
    if check:
        existing = [
            InboxRef(*row)
            for row in sq.execute(
                "SELECT user_id, inbox_seq, message_id, conversation_id, seq FROM inbox_entries "
                f"WHERE message_id = ? AND user_id IN ({', '.join('?' * len(users))})",
                [message.id, *users],
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
        InboxRef(u, counters[u], message.id, message.conversation_id, message.seq) for u in fresh
    ]
    if refs:
        created = binds.inbox_created_at(utcnow())
        sq.executemany(
            "INSERT INTO inbox_entries (user_id, inbox_seq, message_id, conversation_id, "
            "seq, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (r.user_id, r.inbox_seq, r.message_id, r.conversation_id, r.seq, created)
                for r in refs
            ],
        )
    if finish:
        sq.execute(
            "UPDATE conversation_messages SET fanout_status = 'done' WHERE id = ?", (message.id,)
        )
    return refs, existing
