"""Ending a turn: one record, one final event, and no tool call left without a result."""

from __future__ import annotations

import json

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from activities.deps import Deps
from chatee import store
from chatee.metrics import TURNS
from chatee.models import Message, Turn
from workflows.types import FinishTurnInput


async def finish_turn(deps: Deps, inp: FinishTurnInput, content: str | None = None) -> None:
    """Record the turn and publish its one ending event. `content`: the reply's text when the
    caller has it at hand (saves reading it back)."""
    session_id, turn_id = int(inp.session_id), int(inp.turn_id)
    if inp.rollback:
        async with deps.db() as db:
            await db.execute(
                delete(Message).where(Message.session_id == session_id, Message.turn_id == turn_id)
            )
            await db.commit()
    elif inp.status != "completed":  # a completed turn answered every call it made
        await close_open_tool_calls(deps, session_id, turn_id, inp.error_message or inp.status)
    elif inp.message_id:
        await _cite(deps, session_id, turn_id, int(inp.message_id))
    await _record(deps, inp)

    key = f"{inp.turn_id}:end"  # one ending per turn, whichever is recorded first
    if inp.status == "completed":
        if content is None and inp.message_id:
            async with deps.db() as db:
                message = await db.get(Message, int(inp.message_id))
                content = message.content if message else ""
        data = {"turn_id": inp.turn_id, "message_id": inp.message_id, "content": content or ""}
        await deps.bus.publish(inp.session_id, "turn.completed", {**data, "usage": inp.usage}, key)
    else:
        error = {"type": inp.error_type or inp.status, "message": inp.error_message or inp.status}
        await deps.bus.publish(
            inp.session_id, "turn.failed", {"turn_id": inp.turn_id, "error": error}, key
        )


async def _cite(deps: Deps, session_id: int, turn_id: int, message_id: int) -> None:
    """Store what the turn's AG_RAG steps cited with its reply (one indexed read when none)."""
    async with deps.db() as db:
        cited = await store.turn_citations(db, session_id, turn_id)
        if cited:
            await db.execute(
                update(Message)
                .where(Message.id == message_id, Message.citations.is_(None))
                .values(citations=cited)
            )
            await db.commit()


async def close_open_tool_calls(deps: Deps, session_id: int, turn_id: int, reason: str) -> None:
    """Give every tool call of the turn a result, so the conversation stays well-formed."""
    async with deps.db() as db:
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
            await store.store_message_once(
                deps.db,
                idempotency_key=f"{turn_id}:{call['id']}:closed",
                session_id=session_id,
                role="tool",
                content=json.dumps(
                    {"is_error": True, "content": [{"type": "text", "text": reason}]}
                ),
                turn_id=turn_id,
                tool_call_id=call["id"],
            )


async def _record(deps: Deps, inp: FinishTurnInput) -> None:
    async with deps.db() as db:
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
