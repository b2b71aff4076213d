"""Ending a turn: one record, one final event, and no tool call left without a result."""

from __future__ import annotations

import json

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from chatee import session_store
from chatee.metrics import TURNS
from chatee.models import Message, Turn
from chatee.services import Services
from workflows.events import TURN_COMPLETED, TURN_FAILED
from workflows.types import FinishTurnInput


async def finish_turn(services: Services, inp: FinishTurnInput, content: str | None = None) -> None:
    """Record the turn and publish its one ending event. `content`: the reply's text when the
    caller has it at hand (saves reading it back)."""
    session_id, turn_id = int(inp.session_id), int(inp.turn_id)
    if inp.rollback:
        async with services.sessionmaker() as db:
            await db.execute(
                delete(Message).where(Message.session_id == session_id, Message.turn_id == turn_id)
            )
            await db.commit()
    elif inp.status != "completed":  # a completed turn answered every call it made
        await close_open_tool_calls(services, session_id, turn_id, inp.error_message or inp.status)
    elif inp.message_id:
        await _cite(services, session_id, turn_id, int(inp.message_id))
    await _record(services, inp)

    key = f"{inp.turn_id}:end"  # one ending per turn, whichever is recorded first
    if inp.status == "completed":
        if content is None and inp.message_id:
            async with services.sessionmaker() as db:
                message = await db.get(Message, int(inp.message_id))
                content = message.content if message else ""
        data = {"turn_id": inp.turn_id, "message_id": inp.message_id, "content": content or ""}
        await services.bus.publish(
            inp.session_id, TURN_COMPLETED, {**data, "usage": inp.usage}, key
        )
    else:
        error = {"type": inp.error_type or inp.status, "message": inp.error_message or inp.status}
        await services.bus.publish(
            inp.session_id, TURN_FAILED, {"turn_id": inp.turn_id, "error": error}, key
        )


async def _cite(services: Services, session_id: int, turn_id: int, message_id: int) -> None:
    """Store what the turn's AG_RAG steps cited with its reply (one indexed read when none)."""
    async with services.sessionmaker() as db:
        cited = await session_store.turn_citations(db, session_id, turn_id)
        if cited:
            await db.execute(
                update(Message)
                .where(Message.id == message_id, Message.citations.is_(None))
                .values(citations=cited)
            )
            await db.commit()


async def close_open_tool_calls(
    services: Services, session_id: int, turn_id: int, reason: str
) -> None:
    """Give every tool call of the turn a result, so the conversation stays well-formed."""
    async with services.sessionmaker() as db:
        rows = (
            await db.execute(
                select(Message).where(Message.session_id == session_id, Message.turn_id == turn_id)
            )
        ).scalars()
        messages = list(rows)
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    for message in messages:
        for call in message.tool_calls or []:
            if call["id"] in answered:
                continue
            await session_store.store_message_once(
                services.sessionmaker,
                idempotency_key=f"{turn_id}:{call['id']}:closed",
                session_id=session_id,
                role="tool",
                content=json.dumps(
                    {"is_error": True, "content": [{"type": "text", "text": reason}]}
                ),
                turn_id=turn_id,
                tool_call_id=call["id"],
                tool_name=call.get("name"),
            )


async def _record(services: Services, inp: FinishTurnInput) -> None:
    async with services.sessionmaker() as db:
        if await db.get(Turn, int(inp.turn_id)) is not None:
            return
        db.add(
            Turn(
                id=int(inp.turn_id),
                session_id=int(inp.session_id),
                status=inp.status,
                error_type=inp.error_type,
                usage=inp.usage or None,
                steps=inp.steps or None,
            )
        )
        try:
            await db.commit()
        except IntegrityError:  # a concurrent attempt recorded it first
            await db.rollback()
            return
    TURNS.labels(inp.status).inc()  # once per turn: only the attempt that recorded it counts
