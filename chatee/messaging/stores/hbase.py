"""The HBase message store (`CHATEE_MESSAGE_STORE=hbase`, Thrift via `happybase`).

Two tables (names get the `messaging.hbase_table_prefix`, e.g. `chatee_messages`):

* `messages`, family `m`: one row per message,
  key = salt(conversation) · conversation id (8 bytes, big-endian) · (2^63-1 − seq) (8 bytes).
  A conversation's rows sit together, newest first: "the latest 50" and "50 before seq N" are
  each a single short forward scan.
* `inbox`, family `i`: one row per inbox entry (a reference, not a copy of the body),
  key = salt(user) · user id (8 bytes) · inbox_seq (8 bytes), ascending: `sync after=N` is one
  scan starting at N+1.

The salt is one byte, crc32(id) mod `hbase_salt_buckets`. Ids are time-ordered snowflakes, so
unsalted keys would send every new conversation's and user's writes to the last region; the
salt spreads them over as many key ranges as there are buckets (pre-split the tables on the
salt bytes to give each its own region), while one conversation or inbox stays contiguous.

Sequencing stays in the SQL ledger (gap-free counters, idempotency keys). A message's body is
written to HBase while the ledger row is still uncommitted, so every committed message has its
body; an edit or a deletion rewrites it the same way, inside the change's transaction. Inbox
rows of changes carry the change's id and kind; the change itself (small: an emoji and a count,
a member) is read from the SQL ledger. Inbox rows are written after the ledger commits; a
reader that finds one missing (the writer died in between) rebuilds it from the ledger — read
repair — so sync never skips one.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import happybase

from chatee.messaging import ledger
from chatee.messaging.stores.base import (
    Earlier,
    MessageStore,
    change_item,
    earlier_items,
    refs_of,
)
from chatee.messaging.types import MESSAGE, ChatMessage, Draft, InboxItem, InboxRef

MAX_SEQ = 2**63 - 1
_END = b"\xff" * 8 + b"\x00"  # sorts after every 8-byte suffix of a prefix
MESSAGES, INBOX = "messages", "inbox"


def salt(entity_id: int, buckets: int) -> bytes:
    return bytes([zlib.crc32(entity_id.to_bytes(8, "big")) % buckets])


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def message_key(conversation_id: int, seq: int, buckets: int) -> bytes:
    return salt(conversation_id, buckets) + _u64(conversation_id) + _u64(MAX_SEQ - seq)


def inbox_key(user_id: int, inbox_seq: int, buckets: int) -> bytes:
    return salt(user_id, buckets) + _u64(user_id) + _u64(inbox_seq)


def _message_columns(message: ChatMessage) -> dict[bytes, bytes]:
    columns = {
        b"m:id": str(message.id).encode(),
        b"m:conversation_id": str(message.conversation_id).encode(),
        b"m:seq": str(message.seq).encode(),
        b"m:sender_id": str(message.sender_id).encode(),
        b"m:sender_type": message.sender_type.encode(),
        b"m:content": message.content.encode(),
        b"m:client_msg_id": message.client_msg_id.encode(),
        b"m:created_at": message.created_at.isoformat().encode(),
    }
    if message.meta:
        columns[b"m:meta"] = json.dumps(message.meta).encode()
    if message.edited_at is not None:
        columns[b"m:edited_at"] = message.edited_at.isoformat().encode()
    if message.deleted:
        columns[b"m:deleted"] = b"1"
    return columns


def _message_from(columns: dict[bytes, bytes]) -> ChatMessage:
    meta = columns.get(b"m:meta")
    edited = columns.get(b"m:edited_at")
    return ChatMessage(
        id=int(columns[b"m:id"]),
        conversation_id=int(columns[b"m:conversation_id"]),
        seq=int(columns[b"m:seq"]),
        sender_id=int(columns[b"m:sender_id"]),
        sender_type=columns[b"m:sender_type"].decode(),
        content=columns[b"m:content"].decode(),
        client_msg_id=columns[b"m:client_msg_id"].decode(),
        created_at=datetime.fromisoformat(columns[b"m:created_at"].decode()),
        meta=json.loads(meta) if meta else None,
        edited_at=datetime.fromisoformat(edited.decode()) if edited else None,
        deleted=columns.get(b"m:deleted") == b"1",
    )


def _ref_columns(ref: InboxRef) -> dict[bytes, bytes]:
    columns = {
        b"i:message_id": str(ref.message_id).encode(),
        b"i:conversation_id": str(ref.conversation_id).encode(),
        b"i:seq": str(ref.seq).encode(),
    }
    if ref.change_id:
        columns[b"i:kind"] = ref.kind.encode()
        columns[b"i:change_id"] = str(ref.change_id).encode()
    return columns


class HBaseMessageStore(MessageStore):
    def __init__(
        self,
        db: ledger.Factory,
        *,
        host: str,
        port: int = 9090,
        table_prefix: str = "chatee",
        salt_buckets: int = 16,
        pool_size: int = 8,
        timeout_ms: int = 10_000,
    ) -> None:
        super().__init__(db)
        self.buckets = salt_buckets
        self.pool = happybase.ConnectionPool(
            pool_size, host=host, port=port, table_prefix=table_prefix, timeout=timeout_ms
        )
        self._ready = False
        self._preparing = asyncio.Lock()

    # -- HBase plumbing (happybase is synchronous: every call runs in a worker thread) --------

    async def _run(self, fn: Any, *args: Any) -> Any:
        if not self._ready:
            async with self._preparing:  # one create_table per table, not one per caller
                if not self._ready:
                    await asyncio.to_thread(self._ensure_tables)
                    self._ready = True
        return await asyncio.to_thread(fn, *args)

    def _ensure_tables(self) -> None:
        with self.pool.connection() as conn:
            have = {t.decode() if isinstance(t, bytes) else t for t in conn.tables()}
            for name, family in ((MESSAGES, "m"), (INBOX, "i")):
                if name not in have:
                    conn.create_table(name, {family: {"max_versions": 1}})

    def _put_rows(self, table: str, rows: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        with self.pool.connection() as conn, conn.table(table).batch() as batch:
            for key, columns in rows:
                batch.put(key, columns)

    def _get_rows(self, table: str, keys: list[bytes]) -> dict[bytes, dict[bytes, bytes]]:
        with self.pool.connection() as conn:
            return dict(conn.table(table).rows(keys))

    def _scan(
        self, table: str, start: bytes, stop: bytes, limit: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        with self.pool.connection() as conn:
            return list(conn.table(table).scan(row_start=start, row_stop=stop, limit=limit))

    # -- the interface ----------------------------------------------------------------------

    keeps_content = False  # bodies live in HBase

    async def body_changed(self, message: ChatMessage) -> None:
        key = message_key(message.conversation_id, message.seq, self.buckets)
        columns = _message_columns(message)
        if not message.meta:  # a tombstone drops what it carried
            columns[b"m:meta"] = b""
        await self._run(self._put_rows, MESSAGES, [(key, columns)])

    async def _put_change_refs(self, refs: list[InboxRef]) -> None:
        await self._put_refs(refs)

    async def append(self, draft: Draft) -> tuple[ChatMessage, bool]:
        async def write_body(message: ChatMessage) -> None:
            key = message_key(message.conversation_id, message.seq, self.buckets)
            await self._run(self._put_rows, MESSAGES, [(key, _message_columns(message))])

        return await ledger.append(self.db, draft, keep_content=False, before_commit=write_body)

    async def get(self, message_id: int) -> ChatMessage | None:
        row = await ledger.message_row(self.db, message_id)
        if row is None:
            return None
        found = await self._bodies([(row.conversation_id, row.seq)])
        return found.get((row.conversation_id, row.seq))

    async def _bodies(self, refs: list[tuple[int, int]]) -> dict[tuple[int, int], ChatMessage]:
        keys = [message_key(c, s, self.buckets) for c, s in refs]
        rows = await self._run(self._get_rows, MESSAGES, keys)
        messages = [_message_from(columns) for columns in rows.values()]
        return {(m.conversation_id, m.seq): m for m in messages}

    async def page(
        self, conversation_id: int, before_seq: int | None, limit: int
    ) -> list[ChatMessage]:
        prefix = salt(conversation_id, self.buckets) + _u64(conversation_id)
        newest = MAX_SEQ if before_seq is None else before_seq - 1
        if newest < 1:
            return []
        start = prefix + _u64(MAX_SEQ - newest)
        rows = await self._run(self._scan, MESSAGES, start, prefix + _END, limit)
        return [_message_from(columns) for _, columns in rows]

    async def deliver(
        self,
        message: ChatMessage,
        user_ids: Sequence[int],
        finish: bool = False,
        before: Earlier = (),
    ) -> list[InboxItem]:
        done = await ledger.deliver(self.db, message, user_ids, finish, refs_of(before))
        refs = sorted(done.fresh + done.existing, key=lambda r: r.user_id)
        # existing ones too: a retry after a crash between ledger and HBase heals them
        await self._put_refs(done.earlier + refs)
        own = [InboxItem(r.user_id, r.inbox_seq, message) for r in refs]
        return earlier_items(done.earlier, before) + own

    async def _put_refs(self, refs: list[InboxRef]) -> None:
        rows = [(inbox_key(r.user_id, r.inbox_seq, self.buckets), _ref_columns(r)) for r in refs]
        if rows:
            await self._run(self._put_rows, INBOX, rows)

    async def inbox(self, user_id: int, after: int, limit: int) -> list[InboxItem]:
        prefix = salt(user_id, self.buckets) + _u64(user_id)
        rows = await self._run(self._scan, INBOX, prefix + _u64(after + 1), prefix + _END, limit)
        refs: list[InboxRef] = []
        for key, columns in rows:
            inbox_seq = int.from_bytes(key[-8:], "big")
            if inbox_seq != after + len(refs) + 1:
                break  # a hole: the rest comes from the ledger below
            refs.append(
                InboxRef(
                    user_id,
                    inbox_seq,
                    int(columns[b"i:message_id"]),
                    int(columns[b"i:conversation_id"]),
                    int(columns[b"i:seq"]),
                    columns.get(b"i:kind", MESSAGE.encode()).decode(),
                    int(columns.get(b"i:change_id", b"0")),
                )
            )
        if len(refs) < limit:
            head = (await self.inbox_heads([user_id]))[user_id]
            if after + len(refs) < head:  # read repair from the ledger
                missing = await ledger.inbox_refs(
                    self.db, user_id, after + len(refs), limit - len(refs)
                )
                await self._put_refs(missing)
                refs += missing
        bodies = await self._bodies([(r.conversation_id, r.seq) for r in refs if r.message_id])
        messages = {m.id: m for m in bodies.values()}
        changes = await ledger.change_rows(self.db, [r.change_id for r in refs if r.change_id])
        items = []
        for ref in refs:
            item = change_item(ref, changes, messages)
            if item is None:
                break  # never expected: bodies are written before the ledger commits
            items.append(item)
        return items

    async def close(self) -> None:
        """happybase's pool has no close; connections end with the process."""
