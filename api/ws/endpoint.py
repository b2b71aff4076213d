"""The `WS /ws` route: authenticate, accept, attach to the hub, read frames until the client
leaves, detach."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from api.deps import Principal, Services, authenticate
from api.limits import FrameGuard
from api.ws.connection import TRY_AGAIN_LATER, UNAUTHORIZED
from api.ws.frames import error_frame, follow_session, handle
from api.ws.hub import Hub
from chatee.errors import Unavailable
from chatee.logging import get_logger
from chatee.metrics import WS_CONNECTIONS

log = get_logger(__name__)
router = APIRouter()


async def _authenticate(ws: WebSocket, svc: Services) -> Principal | None:
    """An access token or an API key with the `conversations` or `chat` scope (api.deps)."""
    token = ws.query_params.get("token")
    if token is None:
        header = ws.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
    if not token or svc.settings.jwt_secret is None:
        return None
    principal = await authenticate(svc, token)  # Unavailable when revocations can't be checked
    if principal is None or not (
        principal.allows("conversations", True) or principal.allows("chat", True)
    ):
        return None
    return principal


def _int_param(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() and len(raw) <= 18 else None


async def _accept(ws: WebSocket) -> None:
    """The handshake answer carries the connection's request id (bound by RequestContext),
    like every HTTP response, so a client can quote it."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    headers = [(b"x-request-id", request_id.encode())] if request_id else None
    await ws.accept(headers=headers)


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    try:
        principal = await _authenticate(ws, hub.svc)
    except Unavailable:  # a dependency is away: the token may be fine, so not 4401
        await _accept(ws)
        await ws.close(TRY_AGAIN_LATER, "try again shortly")
        return
    await _accept(ws)
    if principal is None:  # accepted first, so the client sees the code, not a failed handshake
        await ws.close(UNAUTHORIZED, "missing, invalid or revoked token")
        return
    user_id, guard = principal.user_id, FrameGuard(hub.svc.settings, principal)
    try:
        conn = await hub.attach(ws, principal, _int_param(ws.query_params.get("after")))
    except Exception:
        log.exception("could not attach a socket", user=user_id)
        await ws.close(1011, "try again shortly")
        return
    WS_CONNECTIONS.inc()
    try:
        session_id = ws.query_params.get("session_id")
        if session_id is not None:
            await follow_session(conn, session_id)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            if (refusal := guard.check(text or "")) is not None:  # size, rate, scope
                conn.control(error_frame(refusal))
                continue
            await handle(conn, text or "")
    except WebSocketDisconnect:
        pass
    finally:
        WS_CONNECTIONS.dec()
        await hub.detach(conn)
