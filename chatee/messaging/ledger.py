"""The SQL ledger every message store sequences through.

Both numbers a client relies on are taken here, atomically, inside one transaction:

* a conversation's `seq`: the `conversations` row is locked by an `UPDATE … last_seq + 1`,
  and the message row is inserted in the same transaction, so `seq` is gap-free and unique
  per conversation; `(conversation, sender, client_msg_id)` is unique, so a resend finds the
  first send instead of writing a second message;
* a user's `inbox_seq`: `user_inbox_counters` rows are locked (in user-id order, so two
  deliveries never deadlock) and bumped in the same transaction that inserts the inbox rows, so
  a rolled-back delivery gives its numbers back and the counter never skips one. `(user,
  message)` is unique: a retried fan-out finds what the first attempt delivered.

Every transaction starts with a write. On MySQL that takes the row locks before the first
consistent read, so what it reads next is current; on SQLite it takes the database's write lock
up front (a read-then-write transaction could otherwise fail to upgrade under concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime

from sqlalchemy import Insert, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.ids import new_id
from chatee.messaging.types import ChatMessage, Draft, InboxRef
from chatee.models import (
    Base,
    Conversation,
    ConversationMessage,
    ConversationRead,
    InboxEntry,
    UserInboxCounter,
    utcnow,
)

ATTEMPTS = 8
Factory = async_sessionmaker[AsyncSession]
_sqlite_writers: dict[int, asyncio.Lock] = {}


@contextlib.asynccontextmanager
async def _writing(factory: Factory) -> AsyncIterator[None]:
    """On SQLite, one ledger write at a time per process: SQLite has one writer anyway, and
    waiting here is a queue, while waiting in SQLite's busy handler is sleep-and-poll (tens of
    ms of idle per collision). Other databases lock rows, so they go straight through."""
    bind = factory.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        yield
        return
    lock = _sqlite_writers.setdefault(id(bind), asyncio.Lock())
    async with lock:
        yield


class ConversationGone(Exception):
    """The conversation a message was sent to does not exist (any more)."""


def row_message(row: ConversationMessage, content: str | None = None) -> ChatMessage:
    return ChatMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        sender_type=row.sender_type,
        content=content if content is not None else (row.content or ""),
        client_msg_id=row.client_msg_id,
        created_at=row.created_at,
        meta=row.meta,
    )


def _transient(exc: OperationalError) -> bool:
    """Deadlock / lock wait timeout (MySQL 1213/1205) or a busy SQLite: worth another go."""
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return code in (1205, 1213) or "locked" in str(exc).lower() or "busy" in str(exc).lower()


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.5, 0.01 * 2**attempt) * random.random())


async def append(
    factory: Factory,
    draft: Draft,
    keep_content: bool,
    before_commit: Callable[[ChatMessage], Awaitable[None]] | None = None,
) -> tuple[ChatMessage, bool]:
    """Take the conversation's next `seq` and record the message, once per client_msg_id.

    Returns the message and whether this call created it. `before_commit` runs while the
    row lock is held (the HBase store writes the body there, so a committed ledger row always
    has its body)."""
    for attempt in range(ATTEMPTS):
        async with _writing(factory), factory() as db:
            try:
                bumped = await db.execute(
                    update(Conversation)
                    .where(Conversation.id == draft.conversation_id)
                    .values(last_seq=Conversation.last_seq + 1, last_message_at=utcnow())
                )
                if bumped.rowcount == 0:
                    raise ConversationGone(draft.conversation_id)
                existing = await _by_client_id(db, draft)
                if existing is not None:
                    found = row_message(existing)
                    await db.rollback()  # gives the seq back
                    return found, False
                seq = await db.scalar(
                    select(Conversation.last_seq).where(Conversation.id == draft.conversation_id)
                )
                row = ConversationMessage(
                    id=new_id(),
                    conversation_id=draft.conversation_id,
                    seq=seq,
                    sender_id=draft.sender_id,
                    sender_type=draft.sender_type,
                    client_msg_id=draft.client_msg_id,
                    content=draft.content if keep_content else None,
                    meta=draft.meta,
                    fanout_status="pending",
                    # whole seconds: what a MySQL DATETIME keeps, so a resend reads the same
                    created_at=utcnow().replace(microsecond=0),
                )
                db.add(row)
                await db.flush()
                if draft.sender_type == "user":  # you have read what you wrote
                    await _read_up_to(db, draft.conversation_id, draft.sender_id, seq)
                message = row_message(row, draft.content)
                if before_commit is not None:
                    await before_commit(message)
                await db.commit()
                return message, True
            except IntegrityError:  # the same client_msg_id raced in: the loop finds it
                await db.rollback()
            except OperationalError as exc:
                await db.rollback()
                if not _transient(exc):
                    raise
        await _backoff(attempt)
    raise RuntimeError(f"could not append to conversation {draft.conversation_id}")


async def _read_up_to(db: AsyncSession, conversation_id: int, user_id: int, seq: int) -> None:
    """Move a read marker forward inside the caller's transaction."""
    marker = {"conversation_id": conversation_id, "user_id": user_id, "last_read_seq": 0}
    await db.execute(_insert_ignore(db, ConversationRead), [marker])
    await db.execute(
        update(ConversationRead)
        .where(
            ConversationRead.conversation_id == conversation_id,
            ConversationRead.user_id == user_id,
            ConversationRead.last_read_seq < seq,
        )
        .values(last_read_seq=seq)
    )


async def _by_client_id(db: AsyncSession, draft: Draft) -> ConversationMessage | None:
    stmt = select(ConversationMessage).where(
        ConversationMessage.conversation_id == draft.conversation_id,
        ConversationMessage.sender_id == draft.sender_id,
        ConversationMessage.client_msg_id == draft.client_msg_id,
    )
    return (await db.execute(stmt)).scalar_one_or_none()


async def message_row(factory: Factory, message_id: int) -> ConversationMessage | None:
    async with factory() as db:
        return await db.get(ConversationMessage, message_id)


def _insert_ignore(db: AsyncSession, table: type[Base]) -> Insert:
    """INSERT that skips rows whose key exists (dialect-specific spelling)."""
    if db.bind.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return insert(table).prefix_with("IGNORE")


async def _ensure_counters(factory: Factory, users: Sequence[int]) -> None:
    """Create missing counter rows in a short transaction of their own, so the delivery
    transaction only ever takes exclusive locks (no shared-then-exclusive upgrade)."""
    async with factory() as db:
        have = set(
            (
                await db.execute(
                    select(UserInboxCounter.user_id).where(UserInboxCounter.user_id.in_(users))
                )
            ).scalars()
        )
        missing = [{"user_id": u, "last_seq": 0} for u in users if u not in have]
        if missing:
            await db.execute(_insert_ignore(db, UserInboxCounter), missing)
            await db.commit()


async def deliver(
    factory: Factory, message: ChatMessage, user_ids: Sequence[int], finish: bool = False
) -> tuple[list[InboxRef], list[InboxRef]]:
    """Give each user one inbox entry for `message`. Returns (new refs, refs that existed).
    `finish`: this is the last batch — mark the message fanned out in the same transaction."""
    users = sorted(set(user_ids))
    if not users:
        if finish:
            await mark_fanned_out(factory, message.id)
        return [], []
    await _ensure_counters(factory, users)
    for attempt in range(ATTEMPTS):
        async with _writing(factory), factory() as db:
            try:
                return await _deliver_once(db, message, users, finish)
            except IntegrityError:  # a concurrent attempt delivered some of them: look again
                await db.rollback()
            except OperationalError as exc:
                await db.rollback()
                if not _transient(exc):
                    raise
        await _backoff(attempt)
    raise RuntimeError(f"could not deliver message {message.id}")


async def _deliver_once(
    db: AsyncSession, message: ChatMessage, users: list[int], finish: bool
) -> tuple[list[InboxRef], list[InboxRef]]:
    # lock the counters first (a no-op write: row locks on MySQL, the write lock on SQLite)
    await db.execute(
        update(UserInboxCounter)
        .where(UserInboxCounter.user_id.in_(users))
        .values(last_seq=UserInboxCounter.last_seq)
    )
    counters = dict(
        (
            await db.execute(
                select(UserInboxCounter.user_id, UserInboxCounter.last_seq).where(
                    UserInboxCounter.user_id.in_(users)
                )
            )
        ).all()
    )
    existing = [
        _ref(e)
        for e in (
            await db.execute(
                select(InboxEntry).where(
                    InboxEntry.message_id == message.id, InboxEntry.user_id.in_(users)
                )
            )
        ).scalars()
    ]
    done = {r.user_id for r in existing}
    fresh = [u for u in users if u not in done]
    now = utcnow()
    refs = [
        InboxRef(u, counters[u] + 1, message.id, message.conversation_id, message.seq)
        for u in fresh
    ]
    if refs:
        await db.execute(
            update(UserInboxCounter),
            [{"user_id": r.user_id, "last_seq": r.inbox_seq} for r in refs],
        )
        await db.execute(
            insert(InboxEntry),
            [
                {
                    "user_id": r.user_id,
                    "inbox_seq": r.inbox_seq,
                    "message_id": r.message_id,
                    "conversation_id": r.conversation_id,
                    "seq": r.seq,
                    "created_at": now,
                }
                for r in refs
            ],
        )
    if finish:
        await db.execute(
            update(ConversationMessage)
            .where(ConversationMessage.id == message.id)
            .values(fanout_status="done")
        )
    await db.commit()
    return refs, existing


def _ref(entry: InboxEntry) -> InboxRef:
    return InboxRef(
        entry.user_id, entry.inbox_seq, entry.message_id, entry.conversation_id, entry.seq
    )


async def inbox_refs(factory: Factory, user_id: int, after: int, limit: int) -> list[InboxRef]:
    async with factory() as db:
        rows = (
            await db.execute(
                select(InboxEntry)
                .where(InboxEntry.user_id == user_id, InboxEntry.inbox_seq > after)
                .order_by(InboxEntry.inbox_seq)
                .limit(limit)
            )
        ).scalars()
        return [_ref(e) for e in rows]


async def inbox_heads(factory: Factory, user_ids: Sequence[int]) -> dict[int, int]:
    """The last `inbox_seq` of each user (0 for a user who never got anything)."""
    users = list(set(user_ids))
    heads = dict.fromkeys(users, 0)
    async with factory() as db:
        for i in range(0, len(users), 500):
            rows = await db.execute(
                select(UserInboxCounter.user_id, UserInboxCounter.last_seq).where(
                    UserInboxCounter.user_id.in_(users[i : i + 500])
                )
            )
            heads.update(dict(rows.all()))
    return heads


async def mark_fanned_out(factory: Factory, message_id: int) -> None:
    async with factory() as db:
        await db.execute(
            update(ConversationMessage)
            .where(ConversationMessage.id == message_id)
            .values(fanout_status="done")
        )
        await db.commit()


async def pending_fanouts(factory: Factory, older_than: datetime, limit: int) -> list[int]:
    """Messages whose fan-out never finished (the sending process died): ids to resume."""
    async with factory() as db:
        rows = await db.execute(
            select(ConversationMessage.id)
            .where(
                ConversationMessage.fanout_status == "pending",
                ConversationMessage.created_at < older_than,
            )
            .order_by(ConversationMessage.created_at)
            .limit(limit)
        )
        return list(rows.scalars())
