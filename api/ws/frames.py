"""Client frames: parsing them, the table of their handlers, and the one place an error
becomes an `error` frame (`error_frame`)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, overload

from api.errors import dependency_down
from api.ws.connection import echo_ref
from chatee import agent_sessions
from chatee.bus import Event
from chatee.errors import ChateeError, NotFound, Unavailable, not_found
from chatee.ids import parse_id
from chatee.logging import get_logger
from chatee.messaging import changes, sending

if TYPE_CHECKING:
    from api.ws.connection import Connection

log = get_logger(__name__)


def _error(code: str, detail: str, ref: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail, **extra, **echo_ref(ref)}


@overload
def error_frame(exc: ChateeError, ref: Any = None) -> dict[str, Any]: ...
@overload
def error_frame(exc: BaseException, ref: Any = None) -> dict[str, Any] | None: ...
def error_frame(exc: BaseException, ref: Any = None) -> dict[str, Any] | None:
    """The `error` frame a refused operation answers with, or None for a bug (the caller logs
    it and answers `internal`). The one place an error becomes a frame, as api/errors.py is
    for problem+json: a domain error, or a dependency that is away."""
    if isinstance(exc, ChateeError):
        return _error(exc.code, exc.detail, ref, status=exc.status, **exc.extra)
    down = dependency_down(exc)  # the database, Redis or Temporal away: retry shortly
    if down is not None:
        log.warning("websocket frame refused: dependency unavailable", dependency=down)
        return error_frame(Unavailable(down), ref)
    return None


class BadFrame(Exception):
    pass


def _field(frame: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = frame.get(name)
    if value is None and not required:
        return None
    if kind is int and isinstance(value, bool):
        raise BadFrame(f"{name} must be an integer")
    if not isinstance(value, kind):
        raise BadFrame(f"{name} must be a{'n integer' if kind is int else ' string'}")
    if kind is str and not value:
        raise BadFrame(f"{name} must not be empty")
    if kind is str and not value.isascii():
        try:  # JSON may carry lone surrogates (`"\ud800"`): not text any store can hold
            value.encode()
        except UnicodeEncodeError:
            raise BadFrame(f"{name} must be valid Unicode text") from None
    return value


def _id_field(frame: dict[str, Any], name: str) -> int:
    value = _field(frame, name, str)
    if not value.isdigit() or len(value) > 20 or int(value) >= 1 << 63:
        raise not_found(name.split("_")[0])
    return int(value)


async def handle(conn: Connection, text: str) -> None:
    """One client frame. Nothing a client sends closes the socket: problems come back as
    `error` frames with a `code` and the frame's `ref`."""
    try:
        frame = json.loads(text)
    except ValueError:
        conn.control(_error("bad-frame", "frames are JSON objects"))
        return
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        conn.control(_error("bad-frame", "a frame is a JSON object with a string `type`"))
        return
    kind, ref = frame["type"], frame.get("ref")
    handler = HANDLERS.get(kind)
    if handler is None:
        conn.control(_error("unknown-frame", f"unknown frame type {kind!r}", ref))
        return
    try:
        await handler(conn, frame, ref)
    except BadFrame as exc:
        conn.control(_error("bad-frame", f"{kind}: {exc}", ref))
    except Exception as exc:
        error = error_frame(exc, ref)
        if error is None:
            log.exception("websocket frame failed", type=kind)
            error = _error("internal", "internal error; it has been logged", ref, status=500)
        conn.control(error)


def _client_msg_id(frame: dict[str, Any]) -> str | None:
    client_msg_id = _field(frame, "client_msg_id", str, required=False)
    if client_msg_id is not None and len(client_msg_id) > 128:
        raise BadFrame("client_msg_id is at most 128 characters")
    return client_msg_id


async def _ping(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    conn.control({"type": "pong", "ts": int(time.time() * 1000), **echo_ref(ref)})


async def _message_send(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    hub, m = conn.hub, conn.hub.messenger
    conversation_id = _id_field(frame, "conversation_id")
    content = _field(frame, "content", str)
    client_msg_id = _client_msg_id(frame)
    view = await m.view(conversation_id, conn.user_id)
    message = await sending.send_message(hub.svc, view, conn.user_id, content, client_msg_id)
    conn.control(
        {
            "type": "message.ack",
            "client_msg_id": message.client_msg_id,
            "id": str(message.id),
            "seq": message.seq,
            "conversation_id": str(message.conversation_id),
            **echo_ref(ref),
        }
    )


async def _message_change(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    """`message.edit`, `message.delete`, `reaction.add`, `reaction.remove` — the REST routes'
    use cases; answered with `message.changed {message}` (as the caller sees it, reactions
    included). Members get the change as an `inbox.event`."""
    svc, kind = conn.hub.svc, frame["type"]
    view = await conn.hub.messenger.view(_id_field(frame, "conversation_id"), conn.user_id)
    message_id = _id_field(frame, "message_id")
    if kind == "message.edit":
        content = _field(frame, "content", str)
        message = await changes.edit_message(svc, view, conn.user_id, message_id, content)
    elif kind == "message.delete":
        message = await changes.delete_message(svc, view, conn.user_id, message_id)
    else:
        emoji = _field(frame, "emoji", str)
        add = kind == "reaction.add"
        message = await changes.react(svc, view, conn.user_id, message_id, emoji, add)
    conn.control({"type": "message.changed", "message": message.to_json(), **echo_ref(ref)})


async def _typing(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    m = conn.hub.messenger
    view = await m.view(_id_field(frame, "conversation_id"), conn.user_id)
    await m.typing(view, conn.user_id)


async def _read(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    m = conn.hub.messenger
    view = await m.view(_id_field(frame, "conversation_id"), conn.user_id)
    seq = _field(frame, "seq", int)
    if seq < 0:
        raise BadFrame("seq must be >= 0")
    await m.mark_read(view, conn.user_id, seq)


async def _sync(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    after = _field(frame, "after", int)
    limit = _field(frame, "limit", int, required=False)
    if after < 0 or (limit is not None and limit < 1):
        raise BadFrame("after must be >= 0 and limit >= 1")
    await conn.sync(after, limit, ref)


async def _chat_send(conn: Connection, frame: dict[str, Any], ref: Any) -> None:
    """An agent turn in one of your own sessions; its events arrive as `agent.event`."""
    session_id = _id_field(frame, "session_id")
    content = _field(frame, "content", str)
    client_msg_id = _client_msg_id(frame)
    accepted = await agent_sessions.submit_turn(
        conn.hub.svc, conn.user_id, session_id, content, client_msg_id
    )
    conn.control(
        {
            "type": "chat.ack",
            "session_id": str(session_id),
            "turn_id": str(accepted.turn_id),
            "message_id": str(accepted.message_id),
            **echo_ref(ref),
        }
    )
    events = agent_sessions.turn_events(conn.hub.svc, session_id, accepted.after, accepted.turn_id)
    conn.spawn(_relay_events(conn, str(session_id), events))


async def follow_session(conn: Connection, raw_id: str) -> None:
    """`?session_id=`: every new event of that session (yours only) as `agent.event`."""
    svc = conn.hub.svc
    try:
        async with svc.sessionmaker() as db:
            session = await agent_sessions.owned_session(
                db, conn.user_id, parse_id(raw_id, "session")
            )
    except NotFound as exc:
        conn.control(error_frame(exc))
        return
    events = svc.bus.follow(session.id, await svc.bus.last_id(session.id))
    conn.spawn(_relay_events(conn, str(session.id), events))


async def _relay_events(conn: Connection, session_id: str, events: AsyncIterator[Event]) -> None:
    async for event in events:
        conn.ephemeral(_agent_frame(session_id, event))


def _agent_frame(session_id: str, event: Event) -> dict[str, Any]:
    return {
        "type": "agent.event",
        "session_id": session_id,
        "event": event.event,
        "id": event.id,
        "data": event.data,
    }


HANDLERS: dict[str, Callable[[Connection, dict[str, Any], Any], Awaitable[None]]] = {
    "ping": _ping,
    "message.send": _message_send,
    "message.edit": _message_change,
    "message.delete": _message_change,
    "reaction.add": _message_change,
    "reaction.remove": _message_change,
    "chat.send": _chat_send,
    "typing": _typing,
    "read": _read,
    "sync": _sync,
}
