"""The SQL ledger every message store sequences through.

Both numbers a client relies on are taken here, atomically, inside one transaction:

* a conversation's `seq`: the `conversations` row is locked by an `UPDATE … last_seq + 1`,
  and the message row is inserted in the same transaction, so `seq` is gap-free and unique
  per conversation; `(conversation, sender, client_msg_id)` is unique, so a resend finds the
  first send instead of writing a second message;
* a user's `inbox_seq`: `user_inbox_counters` rows are locked (in user-id order, so two
  deliveries never deadlock) and bumped in the same transaction that inserts the inbox rows, so
  a rolled-back delivery gives its numbers back and the counter never skips one. `(user,
  message, change)` is unique: a retried fan-out finds what the first attempt delivered.

A change to a conversation (an edit, a deletion, a reaction, a membership change) is a ledger
row too (`message_changes`), delivered exactly as a message is — the same counters, the same
unique key (its `change_id` beside the message's id), the same `fanout_status` and recovery —
so a member's inbox is one gap-free cursor over everything they must see. The change itself
(the edited text, the tombstone, the reaction row) is written in the transaction that records
it, after locking the message's ledger row, so concurrent changes to one message serialise.

Every transaction starts with a write. On MySQL that takes the row locks before the first
consistent read, so what it reads next is current; on SQLite it takes the database's write lock
up front (a read-then-write transaction could otherwise fail to upgrade under concurrency).

On SQLite, appends and deliveries are group-committed (`chatee.messaging.sqlite_commit`):
the writes queued while one batch runs go together as the next, one transaction and one
commit, each write in a savepoint of its own; the SQL, the locks and each write's
all-or-nothing are unchanged. The retries around them stay here, beside the generic path's.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Insert, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.ids import new_id
from chatee.messaging import sqlite_commit
from chatee.messaging.sqlite_commit import (  # noqa: F401 - the ledger's errors too
    MessageDeleted,
    MissingCounters,
    TooManyReactions,
)
from chatee.messaging.types import (
    MESSAGE,
    Change,
    ChatMessage,
    Draft,
    InboxRef,
    Item,
    Reaction,
)
from chatee.models import (
    Base,
    Conversation,
    ConversationMessage,
    ConversationRead,
    InboxEntry,
    MessageChange,
    MessageReaction,
    UserInboxCounter,
    utcnow,
)

ATTEMPTS = 8
Factory = async_sessionmaker[AsyncSession]


class ConversationGone(Exception):
    """The conversation a message was sent to does not exist (any more)."""


def row_message(row: ConversationMessage, content: str | None = None) -> ChatMessage:
    deleted = row.deleted_at is not None
    return ChatMessage(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        sender_type=row.sender_type,
        content="" if deleted else content if content is not None else (row.content or ""),
        client_msg_id=row.client_msg_id,
        created_at=row.created_at,
        meta=row.meta,
        edited_at=row.edited_at,
        deleted=deleted,
    )


def row_change(row: MessageChange) -> Change:
    return Change(
        id=row.id,
        conversation_id=row.conversation_id,
        kind=row.kind,
        actor_id=row.actor_id,
        created_at=row.created_at,
        message_id=row.message_id,
        seq=row.seq,
        data=row.data or {},
        extra_users=tuple(row.extra_users or ()),
    )


def transient(exc: OperationalError) -> bool:
    """Deadlock / lock wait timeout (MySQL 1213/1205) or a busy SQLite: worth another go."""
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return code in (1205, 1213) or "locked" in str(exc).lower() or "busy" in str(exc).lower()


async def backoff(attempt: int) -> None:
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
    if before_commit is None and sqlite_commit.is_sqlite(factory):
        return await _append_sqlite(factory, draft, keep_content)
    for attempt in range(ATTEMPTS):
        async with sqlite_commit.writing(factory), factory() as db:
            try:
                message = await _append_once(db, draft, keep_content)
                if before_commit is not None:
                    await before_commit(message)
                await db.commit()
                return message, True
            except IntegrityError:  # a resend, or the same client_msg_id raced in
                await db.rollback()  # gives the seq back
            except OperationalError as exc:
                await db.rollback()
                if not transient(exc):
                    raise
        if (resent := await _resent_or_backoff(factory, draft, attempt)) is not None:
            return resent, False
    raise RuntimeError(f"could not append to conversation {draft.conversation_id}")


async def _append_once(
    db: AsyncSession, draft: Draft, keep_content: bool, status: str = "pending"
) -> ChatMessage:
    """The append's statements, in the caller's transaction: the next `seq` (the conversation
    row stays locked), the message row (its fan-out `status`), the sender's read marker."""
    conversations = Conversation.__table__  # Core: the ORM's DML path costs CPU
    bump = (
        update(conversations)
        .where(conversations.c.id == draft.conversation_id)
        .values(last_seq=conversations.c.last_seq + 1, last_message_at=utcnow())
    )
    if db.bind.dialect.update_returning:  # SQLite: the new seq in the same trip
        seq = (await db.execute(bump.returning(conversations.c.last_seq))).scalar()
        if seq is None:
            raise ConversationGone(draft.conversation_id)
    else:
        if (await db.execute(bump)).rowcount == 0:
            raise ConversationGone(draft.conversation_id)
        seq = await db.scalar(
            select(conversations.c.last_seq).where(conversations.c.id == draft.conversation_id)
        )
    # whole seconds: what a MySQL DATETIME keeps, so a resend reads the same
    message = draft.stored(new_id(), seq, utcnow().replace(microsecond=0))
    # a resend hits the unique (conversation, sender, client_msg_id) key: the caller's
    # IntegrityError path finds the first send (no lookup on every send)
    await db.execute(
        insert(ConversationMessage.__table__).values(
            id=message.id,
            conversation_id=message.conversation_id,
            seq=seq,
            sender_id=message.sender_id,
            sender_type=message.sender_type,
            client_msg_id=message.client_msg_id,
            content=draft.content if keep_content else None,
            meta=draft.meta,
            fanout_status=status,
            created_at=message.created_at,
        )
    )
    if draft.sender_type == "user":  # you have read what you wrote
        await read_up_to(db, draft.conversation_id, draft.sender_id, seq)
    return message


async def _append_sqlite(
    factory: Factory, draft: Draft, keep_content: bool
) -> tuple[ChatMessage, bool]:
    """`append` on SQLite, group-committed (see `sqlite_commit`): the same three statements."""
    commit = sqlite_commit.group_commit(factory)
    for attempt in range(ATTEMPTS):
        message_id, now = new_id(), utcnow()
        created = now.replace(microsecond=0)  # whole seconds, as on the generic path
        op = partial(sqlite_commit.append_rows, binds=commit.binds, draft=draft,
                     keep_content=keep_content, message_id=message_id, now=now,
                     created=created)  # fmt: skip
        try:
            seq = await commit.run(op)
            if seq is None:
                raise ConversationGone(draft.conversation_id)
            return draft.stored(message_id, seq, created), True
        except sqlite3.IntegrityError:  # a resend, or the same client_msg_id raced in
            pass
        except sqlite3.OperationalError as exc:
            if not sqlite_commit.transient(exc):
                raise
        if (resent := await _resent_or_backoff(factory, draft, attempt)) is not None:
            return resent, False
    raise RuntimeError(f"could not append to conversation {draft.conversation_id}")


async def append_delivered(
    factory: Factory, draft: Draft, user_ids: Sequence[int], status: str = "done"
) -> tuple[ChatMessage, bool, list[InboxRef]]:
    """`append`, then `deliver(…, finish=True)` to `user_ids`, as ONE transaction.

    For a small audience: one write instead of two, and the message is never `pending`.
    Returns the message, whether this call created it, and the inbox entries it made; a
    resend gets the first send and no entries (whether that one finished is the caller's to
    look at). `status="pending"`: delivered, but work remains (an agent hand-off) — the
    recovery loop finishes it if the process dies before it is marked done."""
    users = sorted(set(user_ids))
    await _ensure_counters(factory, users)
    for attempt in range(ATTEMPTS):
        try:
            if sqlite_commit.is_sqlite(factory):
                message, refs = await _append_delivered_sqlite(factory, draft, users, status)
            else:
                message, refs = await _append_delivered_generic(factory, draft, users, status)
            return message, True, refs
        except MissingCounters as exc:  # the process's memory of them was stale
            _known_counters(factory).difference_update(exc.users)
            await _ensure_counters(factory, sorted(exc.users))
            continue
        except (IntegrityError, sqlite3.IntegrityError):  # a resend
            pass
        except OperationalError as exc:
            if not transient(exc):
                raise
        except sqlite3.OperationalError as exc:
            if not sqlite_commit.transient(exc):
                raise
        if (resent := await _resent_or_backoff(factory, draft, attempt)) is not None:
            return resent, False, []
    raise RuntimeError(f"could not append to conversation {draft.conversation_id}")


async def _append_delivered_sqlite(
    factory: Factory, draft: Draft, users: list[int], status: str = "done"
) -> tuple[ChatMessage, list[InboxRef]]:
    commit = sqlite_commit.group_commit(factory)
    binds = commit.binds
    message_id, now = new_id(), utcnow()
    created = now.replace(microsecond=0)

    def work(sq: sqlite3.Connection) -> tuple[ChatMessage, list[InboxRef]]:
        seq = sqlite_commit.append_rows(sq, binds=binds, draft=draft, keep_content=True,
                                        message_id=message_id, now=now, created=created,
                                        status=status)  # fmt: skip
        if seq is None:
            raise ConversationGone(draft.conversation_id)
        message = draft.stored(message_id, seq, created)
        # a message this new has been delivered to nobody yet
        refs, _ = sqlite_commit.deliver_rows(sq, binds=binds, item=message.item, users=users,
                                             finish=False, check=False)  # fmt: skip
        return message, refs

    return await commit.run(work)


async def _append_delivered_generic(
    factory: Factory, draft: Draft, users: list[int], status: str = "done"
) -> tuple[ChatMessage, list[InboxRef]]:
    async with factory() as db:  # not SQLite (that goes through the group commit)
        try:
            message = await _append_once(db, draft, keep_content=True, status=status)
            refs, _ = await _deliver_once(db, message, users, finish=False, check=False)
            await db.commit()
        except BaseException:
            await db.rollback()  # gives the seq and the inbox numbers back
            raise
        return message, refs


async def read_up_to(db: AsyncSession, conversation_id: int, user_id: int, seq: int) -> None:
    """Move a read marker forward inside the caller's transaction (one upsert)."""
    marker = {"conversation_id": conversation_id, "user_id": user_id, "last_read_seq": seq}
    reads = ConversationRead.__table__  # Core: the ORM's DML path costs CPU on every send
    if db.bind.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(reads).values(marker)
        stmt = stmt.on_conflict_do_update(
            index_elements=["conversation_id", "user_id"],
            set_={"last_read_seq": func.max(reads.c.last_read_seq, seq)},
        )
    else:
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(reads).values(marker)
        stmt = stmt.on_duplicate_key_update(last_read_seq=func.greatest(reads.c.last_read_seq, seq))
    await db.execute(stmt)


async def _resent_or_backoff(factory: Factory, draft: Draft, attempt: int) -> ChatMessage | None:
    """After a failed append attempt: the message a resend (same client_msg_id) already
    stored, or None after backing off before the next attempt."""
    async with factory() as db:
        existing = await _by_client_id(db, draft)
    if existing is not None:
        return row_message(existing)
    await backoff(attempt)
    return None


async def _by_client_id(db: AsyncSession, draft: Draft) -> ConversationMessage | None:
    stmt = select(ConversationMessage).where(
        ConversationMessage.conversation_id == draft.conversation_id,
        ConversationMessage.sender_id == draft.sender_id,
        ConversationMessage.client_msg_id == draft.client_msg_id,
    )
    return (await db.execute(stmt)).scalar_one_or_none()


async def message_row(factory: Factory, message_id: int) -> ConversationMessage | None:
    """The ledger row, read-only (a Core row with the model's attributes: the ORM's identity
    map costs CPU on every edit and reaction)."""
    table = ConversationMessage.__table__
    async with factory() as db:
        row = (await db.execute(select(table).where(table.c.id == message_id))).first()
    return row  # type: ignore[return-value]


def _insert_ignore(db: AsyncSession, table: type[Base]) -> Insert:
    """INSERT that skips rows whose key exists (dialect-specific spelling)."""
    if db.bind.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    return insert(table).prefix_with("IGNORE")


_counted: dict[str, set[int]] = {}  # per database: users known to have a counter row
COUNTED_MAX = 200_000  # forget them all past this many (they are only a shortcut)


def _known_counters(factory: Factory) -> set[int]:
    bind = factory.kw.get("bind")
    key = str(bind.url) if bind is not None else ""
    known = _counted.setdefault(key, set())
    if len(known) > COUNTED_MAX:
        known.clear()
    return known


async def _ensure_counters(factory: Factory, users: Sequence[int]) -> None:
    """Create missing counter rows in a short transaction of their own, so the delivery
    transaction only ever takes exclusive locks (no shared-then-exclusive upgrade). Rows are
    never deleted, so users seen with one are remembered and skipped next time: a steady
    conversation costs no extra session per send."""
    known = _known_counters(factory)
    users = [u for u in users if u not in known]
    if not users:
        return
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
    known.update(users)


@dataclass(frozen=True)
class Delivery:
    """What a `deliver` wrote and found."""

    fresh: list[InboxRef]  # the item's new entries
    existing: list[InboxRef]  # its entries from before (a retry, a resume)
    earlier: list[InboxRef]  # new entries of the items delivered before it (`before`)


Before = Sequence[tuple[Item, Sequence[int]]]  # items to deliver first, each to these users


async def deliver(
    factory: Factory,
    message: ChatMessage | Item,
    user_ids: Sequence[int],
    finish: bool = False,
    before: Before = (),
) -> Delivery:
    """Give each user one inbox entry for a message or a change (`Item`). `finish`: this is
    the last batch — mark it fanned out in the same transaction. `before`: the conversation's
    earlier items still pending (`earlier_pending`), each with those of the users who lack it:
    delivered first, in order, in the same transaction (one lock of the users' counters, so
    a conversation's items reach each inbox in order at the cost of one write)."""
    item = message.item if isinstance(message, ChatMessage) else message
    users = sorted(set(user_ids))
    if not users:
        if finish:
            await mark_fanned_out(factory, item.id, item.kind)
        return Delivery([], [], [])
    await _ensure_counters(factory, users)
    if sqlite_commit.is_sqlite(factory):
        return await _deliver_sqlite(factory, item, users, finish, before)
    check = False  # optimistic: a first delivery finds nothing delivered before it
    for attempt in range(ATTEMPTS):
        async with factory() as db:  # not SQLite (that goes through the group commit)
            try:
                earlier: list[InboxRef] = []
                for first, lacking in before:  # they may have arrived meanwhile: `check`
                    refs, _ = await _deliver_once(db, first, sorted(lacking), False, True)
                    earlier += refs
                fresh, existing = await _deliver_once(db, item, users, finish, check)
                await db.commit()
                return Delivery(fresh, existing, earlier)
            except MissingCounters as exc:
                await db.rollback()
                _known_counters(factory).difference_update(exc.users)
                missing = exc.users
            except IntegrityError:  # delivered before (a retry, a resume): look, then skip them
                await db.rollback()
                missing = set()
                if not check:
                    check = True
                    continue
            except OperationalError as exc:
                await db.rollback()
                if not transient(exc):
                    raise
                missing = set()
        if missing:
            await _ensure_counters(factory, sorted(missing))
            continue
        await backoff(attempt)
    raise RuntimeError(f"could not deliver {item.kind} {item.id}")


async def _deliver_sqlite(
    factory: Factory, item: Item, users: list[int], finish: bool, before: Before
) -> Delivery:
    """`deliver` on SQLite, group-committed (see `sqlite_commit`)."""
    commit = sqlite_commit.group_commit(factory)
    rows = partial(sqlite_commit.deliver_rows, binds=commit.binds)

    def op(sq: sqlite3.Connection) -> Delivery:
        earlier = [
            ref
            for first, lacking in before
            for ref in rows(sq, item=first, users=sorted(lacking), finish=False)[0]
        ]
        return Delivery(*rows(sq, item=item, users=users, finish=finish), earlier)

    for attempt in range(ATTEMPTS):
        try:
            return await commit.run(op)
        except MissingCounters as exc:  # the process's memory of them was stale
            _known_counters(factory).difference_update(exc.users)
            await _ensure_counters(factory, sorted(exc.users))
            continue
        except sqlite3.IntegrityError:
            pass
        except sqlite3.OperationalError as exc:
            if not sqlite_commit.transient(exc):
                raise
        await backoff(attempt)
    raise RuntimeError(f"could not deliver {item.kind} {item.id}")


async def _deliver_once(
    db: AsyncSession, message: ChatMessage | Item, users: list[int], finish: bool, check: bool
) -> tuple[list[InboxRef], list[InboxRef]]:
    """One delivery's statements, in the caller's transaction (MySQL; SQLite deliveries go
    through `sqlite_commit.deliver_rows`). Without `check` it does not look for entries
    delivered before: if there are any, the unique (user, message) key refuses the insert and
    the caller retries with `check`."""
    item = message.item if isinstance(message, ChatMessage) else message
    # Core statements throughout: the ORM's unit of work costs CPU on every send
    counters_table = UserInboxCounter.__table__
    user_id, last_seq = counters_table.c.user_id, counters_table.c.last_seq
    existing: list[InboxRef] = []
    if check:  # lock the counters first (a no-op write), then look at what was delivered
        await db.execute(update(counters_table).where(user_id.in_(users)).values(last_seq=last_seq))
        existing = [
            InboxRef(*row)
            for row in (
                await db.execute(
                    select(*_REF_COLUMNS).where(
                        InboxEntry.message_id == item.message_id,
                        InboxEntry.change_id == item.change_id,
                        InboxEntry.user_id.in_(users),
                    )
                )
            )
        ]
    done = {r.user_id for r in existing}
    fresh = [u for u in users if u not in done]
    counters: dict[int, int] = {}
    if fresh:  # one statement locks and bumps every counter: the new values are the inbox_seqs
        await db.execute(
            update(counters_table).where(user_id.in_(fresh)).values(last_seq=last_seq + 1)
        )
        # no UPDATE … RETURNING on MySQL: a consistent read sees this transaction's own writes
        rows = await db.execute(select(user_id, last_seq).where(user_id.in_(fresh)))
        counters = dict(rows.all())
        if len(counters) < len(fresh):
            raise MissingCounters(set(fresh) - set(counters))
    now = utcnow()
    refs = [item_ref(u, counters[u], item) for u in fresh]
    if refs:
        await db.execute(
            insert(InboxEntry.__table__),
            [
                {
                    "user_id": r.user_id,
                    "inbox_seq": r.inbox_seq,
                    "message_id": r.message_id,
                    "conversation_id": r.conversation_id,
                    "seq": r.seq,
                    "created_at": now,
                    "kind": r.kind,
                    "change_id": r.change_id,
                }
                for r in refs
            ],
        )
    if finish:
        table = _ledger_table(item.kind)
        await db.execute(update(table).where(table.c.id == item.id).values(fanout_status="done"))
    return refs, existing


_REF_COLUMNS = (
    InboxEntry.user_id,
    InboxEntry.inbox_seq,
    InboxEntry.message_id,
    InboxEntry.conversation_id,
    InboxEntry.seq,
    InboxEntry.kind,
    InboxEntry.change_id,
)


def item_ref(user_id: int, inbox_seq: int, item: Item) -> InboxRef:
    return InboxRef(
        user_id,
        inbox_seq,
        item.message_id,
        item.conversation_id,
        item.seq,
        item.kind,
        item.change_id,
    )


def _ledger_table(kind: str) -> Any:
    """The table whose row tracks the fan-out of a message or of a change."""
    return (ConversationMessage if kind == MESSAGE else MessageChange).__table__


def _ref(entry: InboxEntry) -> InboxRef:
    return InboxRef(
        entry.user_id,
        entry.inbox_seq,
        entry.message_id,
        entry.conversation_id,
        entry.seq,
        entry.kind,
        entry.change_id,
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


async def mark_fanned_out(factory: Factory, message_id: int, kind: str = MESSAGE) -> None:
    """A message's (or a change's, by `kind`) fan-out is done."""
    table = _ledger_table(kind)
    async with factory() as db:
        await db.execute(update(table).where(table.c.id == message_id).values(fanout_status="done"))
        await db.commit()


async def write_in_place(
    factory: Factory,
    message_id: int,
    meta: dict[str, Any] | None,
    content: str | None = None,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """Set a live message's meta (and `content`, unless None) in its ledger row, with no inbox
    entry: a streaming reply's text so far. `before_commit` runs while the row is locked (the
    HBase store writes the body there), so a deletion cannot slip in between. False: the
    message was deleted, and nothing was written."""
    values: dict[str, Any] = {"meta": meta}
    if content is not None:
        values["content"] = content
    table = ConversationMessage.__table__
    stmt = update(table).where(table.c.id == message_id, table.c.deleted_at.is_(None))
    async with sqlite_commit.writing(factory), factory() as db:
        live = (await db.execute(stmt.values(**values))).rowcount > 0
        if live and before_commit is not None:
            await before_commit()
        await db.commit()
    return live


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


async def earlier_pending(factory: Factory, item: Item, limit: int = 500) -> list[Item]:
    """What of `item`'s conversation is still `pending` and belongs before it in every inbox,
    in that order: messages with a lower `seq`, then, before a change, the changes recorded
    before it — and before any change, the message it is about (so for a change, messages
    up to the highest `seq` those changes are about). A message's `seq` is taken under the
    conversation's row lock, so no message committed later can have a lower one."""
    m, c = ConversationMessage.__table__.c, MessageChange.__table__.c
    changes: list[Item] = []
    async with factory() as db:
        if item.change_id:
            rows = await db.execute(
                select(c.id, c.kind, c.message_id, c.seq)
                .where(c.conversation_id == item.conversation_id, c.fanout_status == "pending")
                .where(c.id < item.change_id)
                .order_by(c.id)
                .limit(limit)
            )
            changes = [Item(k, mid, i, item.conversation_id, seq) for i, k, mid, seq in rows]
        top = max([item.seq] + [x.seq for x in changes]) if item.change_id else item.seq - 1
        rows = await db.execute(
            select(m.id, m.seq)
            .where(m.conversation_id == item.conversation_id, m.fanout_status == "pending")
            .where(m.seq <= top)
            .order_by(m.seq)
            .limit(limit)
        )
        messages = [Item(MESSAGE, i, 0, item.conversation_id, seq) for i, seq in rows]
    return messages + changes


async def lacking(
    factory: Factory, items: Sequence[Item], user_ids: Sequence[int]
) -> dict[int, list[int]]:
    """Of `user_ids`, who has no inbox entry yet for each of `items` (by the item's id)."""
    if not items or not user_ids:
        return {}
    e = InboxEntry.__table__.c
    async with factory() as db:
        rows = await db.execute(
            select(e.user_id, e.message_id, e.change_id).where(
                e.user_id.in_(user_ids),
                e.message_id.in_({i.message_id for i in items}),
                e.change_id.in_({i.change_id for i in items}),
            )
        )
        have = {(u, mid, cid) for u, mid, cid in rows}
    return {
        i.id: [u for u in user_ids if (u, i.message_id, i.change_id) not in have] for i in items
    }


# -- changes: edits, deletions, reactions, membership ------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """What a change writes besides itself, in both spellings (see `sqlite_commit`): `orm` in
    the caller's transaction, `raw` on SQLite's raw connection inside the group commit (None:
    SQLite takes the ORM path too, under its write lock). Each returns the change's data, or
    None when it changes nothing."""

    orm: Callable[[AsyncSession], Awaitable[dict[str, Any] | None]]
    raw: Callable[[sqlite3.Connection, sqlite_commit.Binds], dict[str, Any] | None] | None = None


async def record_change(
    factory: Factory,
    template: Change,
    mutate: Mutation,
    users: Sequence[int] | None,
    before_commit: Callable[[Change], Awaitable[None]] | None = None,
) -> tuple[Change | None, list[InboxRef]]:
    """In ONE transaction: `mutate` (the change itself — it locks the message's ledger row
    first, and returns the change's data, or None when it changes nothing), the change's
    ledger row, and — `users` given — every one of those users' inbox entries (the change is
    then done at once; without `users` it is `pending` until its fan-out finishes).
    `template` is the change without its id, time and data. Returns the change (None: nothing
    changed) and the entries made."""
    audience = sorted(set(users)) if users is not None else None
    if audience:
        await _ensure_counters(factory, audience)
    if before_commit is None and mutate.raw is not None and sqlite_commit.is_sqlite(factory):
        return await _record_sqlite(factory, template, mutate.raw, audience)
    for attempt in range(ATTEMPTS):
        async with sqlite_commit.writing(factory), factory() as db:
            try:
                data = await mutate.orm(db)
                if data is None:
                    await db.rollback()
                    return None, []
                now = utcnow().replace(microsecond=0)  # whole seconds, as messages keep
                change = Change(
                    id=new_id(),
                    conversation_id=template.conversation_id,
                    kind=template.kind,
                    actor_id=template.actor_id,
                    created_at=now,
                    message_id=template.message_id,
                    seq=template.seq,
                    data=data,
                    extra_users=template.extra_users,
                )
                await db.execute(
                    insert(MessageChange.__table__).values(
                        id=change.id,
                        conversation_id=change.conversation_id,
                        message_id=change.message_id,
                        seq=change.seq,
                        kind=change.kind,
                        actor_id=change.actor_id,
                        data=change.data,
                        extra_users=list(change.extra_users) or None,
                        fanout_status="pending" if audience is None else "done",
                        created_at=now,
                    )
                )
                refs: list[InboxRef] = []
                if audience:
                    refs, _ = await _deliver_once(db, change.item, audience, False, False)
                if before_commit is not None:
                    await before_commit(change)
                await db.commit()
                return change, refs
            except MissingCounters as exc:
                await db.rollback()
                _known_counters(factory).difference_update(exc.users)
                await _ensure_counters(factory, sorted(exc.users))
                continue
            except OperationalError as exc:
                await db.rollback()
                if not transient(exc):
                    raise
            except BaseException:
                await db.rollback()
                raise
        await backoff(attempt)
    raise RuntimeError(f"could not record a {template.kind} in {template.conversation_id}")


async def _record_sqlite(
    factory: Factory,
    template: Change,
    mutate: Callable[[sqlite3.Connection, sqlite_commit.Binds], dict[str, Any] | None],
    users: list[int] | None,
) -> tuple[Change | None, list[InboxRef]]:
    """`record_change` on SQLite, group-committed: the same statements in one hop."""
    commit = sqlite_commit.group_commit(factory)
    for attempt in range(ATTEMPTS):
        change = replace(template, id=new_id(), created_at=utcnow().replace(microsecond=0))
        op = partial(sqlite_commit.record_rows, binds=commit.binds, change=change,
                     mutate=mutate, users=users)  # fmt: skip
        try:
            return await commit.run(op)
        except MissingCounters as exc:
            _known_counters(factory).difference_update(exc.users)
            await _ensure_counters(factory, sorted(exc.users))
            continue
        except sqlite3.OperationalError as exc:
            if not sqlite_commit.transient(exc):
                raise
        await backoff(attempt)
    raise RuntimeError(f"could not record a {template.kind} in {template.conversation_id}")


async def _lock_live_message(db: AsyncSession, message_id: int, **values: Any) -> None:
    """The transaction's first statement: lock the message's ledger row (setting `values`,
    or nothing), or raise MessageDeleted for a tombstone."""
    table = ConversationMessage.__table__
    stmt = update(table).where(table.c.id == message_id, table.c.deleted_at.is_(None))
    stmt = stmt.values(**values) if values else stmt.values(fanout_status=table.c.fanout_status)
    if (await db.execute(stmt)).rowcount == 0:
        raise MessageDeleted(message_id)


def edit_mutation(message_id: int, content: str | None, edited_at: datetime) -> Mutation:
    """Set the new text (`content` None: the body lives elsewhere, only the time is kept)."""

    async def mutate(db: AsyncSession) -> dict[str, Any]:
        values: dict[str, Any] = {"edited_at": edited_at}
        if content is not None:
            values["content"] = content
        await _lock_live_message(db, message_id, **values)
        return {}

    raw = partial(sqlite_commit.edit_rows, message_id=message_id, content=content, at=edited_at)
    return Mutation(mutate, raw)


def delete_mutation(message_id: int, actor_id: int, deleted_at: datetime) -> Mutation:
    """Make the message a tombstone (its text and reactions go); None if it is one already."""

    async def mutate(db: AsyncSession) -> dict[str, Any] | None:
        table = ConversationMessage.__table__
        stmt = (
            update(table)
            .where(table.c.id == message_id, table.c.deleted_at.is_(None))
            .values(deleted_at=deleted_at, deleted_by=actor_id, content=None)
        )
        if (await db.execute(stmt)).rowcount == 0:
            return None
        reactions = MessageReaction.__table__
        await db.execute(delete(reactions).where(reactions.c.message_id == message_id))
        return {"deleted_by": str(actor_id)}

    raw = partial(
        sqlite_commit.delete_rows, message_id=message_id, actor_id=actor_id, at=deleted_at
    )
    return Mutation(mutate, raw)


def reaction_mutation(
    message_id: int, user_id: int, emoji: str, add: bool, max_kinds: int
) -> Mutation:
    """Add (or remove) one person's emoji; the data is the emoji, whether it was added and the
    count it left. None if that person's reaction was there already (or was not)."""

    async def mutate(db: AsyncSession) -> dict[str, Any] | None:
        await _lock_live_message(db, message_id)
        table = MessageReaction.__table__
        c = table.c
        mine = (c.message_id == message_id, c.emoji == emoji, c.user_id == user_id)
        if add:
            if await db.scalar(select(func.count()).where(*mine)):
                return None
            kinds = set(
                (
                    await db.execute(
                        select(table.c.emoji).where(table.c.message_id == message_id).distinct()
                    )
                ).scalars()
            )
            if emoji not in kinds and len(kinds) >= max_kinds:
                raise TooManyReactions(message_id)
            await db.execute(
                insert(table).values(
                    message_id=message_id, emoji=emoji, user_id=user_id, created_at=utcnow()
                )
            )
        elif (await db.execute(delete(table).where(*mine))).rowcount == 0:
            return None
        count = await db.scalar(
            select(func.count()).where(table.c.message_id == message_id, table.c.emoji == emoji)
        )
        return {"emoji": emoji, "added": add, "count": int(count or 0)}

    raw = partial(sqlite_commit.reaction_rows, message_id=message_id, user_id=user_id,
                  emoji=emoji, add=add, max_kinds=max_kinds)  # fmt: skip
    return Mutation(mutate, raw)


async def change_rows(factory: Factory, change_ids: Sequence[int]) -> dict[int, Change]:
    if not change_ids:
        return {}
    async with factory() as db:
        rows = await db.execute(select(MessageChange).where(MessageChange.id.in_(change_ids)))
        return {row.id: row_change(row) for row in rows.scalars()}


async def pending_changes(factory: Factory, older_than: datetime, limit: int) -> list[int]:
    """Changes whose fan-out never finished (the process died): ids to resume."""
    async with factory() as db:
        rows = await db.execute(
            select(MessageChange.id)
            .where(MessageChange.fanout_status == "pending", MessageChange.created_at < older_than)
            .order_by(MessageChange.created_at)
            .limit(limit)
        )
        return list(rows.scalars())


async def reactions_of(
    factory: Factory, message_ids: Sequence[int], viewer: int
) -> dict[int, tuple[Reaction, ...]]:
    """Each message's reactions as `viewer` sees them: one grouped query for a whole page."""
    ids = list(set(message_ids))
    if not ids:
        return {}
    c = MessageReaction.__table__.c
    mine = func.max(case((c.user_id == viewer, 1), else_=0))
    stmt = (
        select(c.message_id, c.emoji, func.count(), func.min(c.created_at), mine)
        .where(c.message_id.in_(ids))
        .group_by(c.message_id, c.emoji)
    )
    async with factory() as db:
        rows = (await db.execute(stmt)).all()
    found: dict[int, list[Reaction]] = {i: [] for i in ids}
    for message_id, emoji, count, _, me in sorted(rows, key=lambda r: (r[3], r[1])):
        found[message_id].append(Reaction(emoji, int(count), bool(me)))  # first used, first
    return {i: tuple(r) for i, r in found.items()}
