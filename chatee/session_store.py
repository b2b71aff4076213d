"""Data access for sessions and session messages.

Writes that a retried activity may repeat go through `idempotency_key`, so a retry returns the
row the first attempt wrote instead of writing a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.ids import new_id
from chatee.models import Message, Session


async def owned_session(db: AsyncSession, user_id: int, session_id: int) -> Session | None:
    session = await db.get(Session, session_id)
    return session if session is not None and session.user_id == user_id else None


async def message_by_client_id(
    db: AsyncSession, session_id: int, client_msg_id: str
) -> Message | None:
    stmt = select(Message).where(
        Message.session_id == session_id, Message.client_msg_id == client_msg_id
    )
    return (await db.execute(stmt)).scalar_one_or_none()


async def message_page(
    db: AsyncSession, session_id: int, before: int | None, limit: int
) -> Sequence[Message]:
    """Newest first, strictly older than `before`."""
    stmt = select(Message).where(Message.session_id == session_id)
    if before is not None:
        stmt = stmt.where(Message.id < before)
    stmt = stmt.order_by(Message.id.desc()).limit(limit)
    return (await db.execute(stmt)).scalars().all()


async def turn_context(
    db: AsyncSession, session_id: int, turn_id: int, limit: int
) -> list[Message]:
    """The conversation as the model should see it for `turn_id`: earlier turns in turn order,
    then this turn — never messages queued behind it."""
    stmt = (
        select(Message)
        .where(Message.session_id == session_id, Message.turn_id <= turn_id)
        .order_by(Message.turn_id.desc(), Message.id.desc())
        .limit(limit)
    )
    rows = list((await db.execute(stmt)).scalars().all())
    rows.reverse()
    return rows


async def store_message_once(
    factory: async_sessionmaker[AsyncSession],
    *,
    idempotency_key: str,
    session_id: int,
    role: str,
    content: str,
    turn_id: int,
    usage: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    tool_call_id: str | None = None,
    tool_name: str | None = None,
) -> Message:
    """Insert a message unless one with this key exists; either way return the stored row.
    A tool result without `tool_name` takes the name its call has in the turn's assistant
    message, so history always says which tool answered."""
    async with factory() as db:
        existing = await _by_key(db, idempotency_key)
        if existing is not None:
            return existing
        if role == "tool" and tool_call_id and not tool_name:
            tool_name = await _called_tool(db, session_id, turn_id, tool_call_id)
        message = Message(
            id=new_id(),
            session_id=session_id,
            role=role,
            content=content,
            turn_id=turn_id,
            idempotency_key=idempotency_key,
            usage=usage,
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
        )
        db.add(message)
        try:
            await db.commit()
            return message
        except IntegrityError:
            await db.rollback()
    async with factory() as db:  # a concurrent attempt won the race
        existing = await _by_key(db, idempotency_key)
        assert existing is not None
        return existing


async def _called_tool(db: AsyncSession, session_id: int, turn_id: int, call_id: str) -> str | None:
    """The name of the tool the turn's assistant message called with `call_id`."""
    asked = await db.scalars(
        select(Message.tool_calls).where(
            Message.session_id == session_id,
            Message.turn_id == turn_id,
            Message.role == "assistant",
            Message.tool_calls.is_not(None),
        )
    )
    for calls in asked:
        for call in calls or []:
            if call.get("id") == call_id:
                return call.get("name") or None
    return None


async def _by_key(db: AsyncSession, key: str) -> Message | None:
    stmt = select(Message).where(Message.idempotency_key == key)
    return (await db.execute(stmt)).scalar_one_or_none()


async def turn_citations(db: AsyncSession, session_id: int, turn_id: int) -> list[Any]:
    """What a turn's AG_RAG steps cited: each step keeps its citations on its retrieval note."""
    rows = await db.scalars(
        select(Message.citations)
        .where(
            Message.session_id == session_id,
            Message.turn_id == turn_id,
            Message.role == "system",
            Message.citations.is_not(None),
        )
        .order_by(Message.id)
    )
    return [citation for citations in rows for citation in citations or []]
