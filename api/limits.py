"""Size and rate limits: request bodies (413 before they are read whole) and WebSocket frames."""

from __future__ import annotations

import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_response
from chatee.config import Settings, ws_frame_limit
from chatee.errors import ChateeError, Forbidden, RateLimited, TooLarge

if TYPE_CHECKING:
    from api.deps import Principal


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it through as a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is over {max_bytes} bytes")


UPLOAD_PATH = re.compile(r"^/api/v1/knowledge-bases/[^/]+/documents(/[^/]+)?$")


class BodySizeLimit:
    """Every body up to `limits.max_request_bytes`; document uploads (`UPLOAD_PATH`) up to
    `limits.max_upload_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int | None = None) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.upload_bytes = upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] in ("POST", "PUT") and UPLOAD_PATH.match(scope["path"])
        max_bytes = self.upload_bytes if upload else self.default_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._reject(scope, receive, send, max_bytes)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, receive, send, max_bytes)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = problem_response(413, f"request body is over {max_bytes} bytes")
        await response(scope, receive, send)


# -- WebSocket frames ---------------------------------------------------------------------------


class FrameGuard:
    """One socket's frame checks, before a frame is parsed: size, rate (a token bucket:
    `ws_messages_per_second` sustained, `ws_message_burst` at once) and, for an API key
    without the `chat` scope, no `chat.send`. A refused frame is answered with an `error`
    frame and dropped; the socket stays open."""

    __slots__ = ("max_bytes", "rate", "burst", "tokens", "last", "no_chat")  # one per socket

    def __init__(self, settings: Settings, principal: Principal) -> None:
        knobs = settings.security
        self.max_bytes = ws_frame_limit(settings)
        self.rate = knobs.ws_messages_per_second
        self.burst = float(knobs.ws_message_burst)
        self.tokens = self.burst
        self.last = time.monotonic()
        self.no_chat = not principal.allows("chat", write=True)

    def check(self, text: str) -> ChateeError | None:
        """None to go ahead, else why the frame is refused (answered as an `error` frame)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            retry_ms = math.ceil((1 - self.tokens) / self.rate * 1000)
            return RateLimited(
                f"more than {self.rate:g} frames per second; frame dropped",
                "rate_limited",
                retry_after_ms=retry_ms,
            )
        self.tokens -= 1
        size = len(text)  # characters; UTF-8 takes 1-4 bytes each: encode only when it matters
        if size > self.max_bytes or (
            4 * size > self.max_bytes
            and len(text.encode("utf-8", "surrogatepass")) > self.max_bytes
        ):
            return TooLarge(f"frames are at most {self.max_bytes} bytes; frame dropped")
        if self.no_chat and '"chat.send"' in text and _frame_type(text) == "chat.send":
            return Forbidden("this API key's scopes do not cover chat.send", "insufficient-scope")
        return None


def _frame_type(text: str) -> Any:
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    return frame.get("type") if isinstance(frame, dict) else None
