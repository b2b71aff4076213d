"""The WebSocket, kept open: reconnects after any drop and catches up through `/sync`, so the
caller sees every inbox entry exactly once and in `inbox_seq` order.

The inbox is gap-free per user: the helper keeps one cursor (the last `inbox_seq` handed out),
fills any gap — after a reconnect, a `resync` error, or a push that arrives early — from
`GET /sync`, then reopens the socket with `after=<cursor>`, and drops anything it already has.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from chatee.client.errors import ChateeClientError, RateLimited, Unauthorized, Unavailable
from chatee.client.models import InboxItem, Tokens

if TYPE_CHECKING:
    from chatee.client.conversations import ConversationsApi

UNAUTHORIZED = 4401  # the server's close code for a missing, invalid or revoked token


@dataclass(frozen=True)
class Frame:
    """A server frame that is not an inbox entry: `typing`, `presence`, `read`,
    `agent.event`, `message.ack`, `chat.ack`, `pong`, `error`…"""

    type: str
    data: dict[str, Any] = field(repr=False)


class Live:
    """`async for x in client.live(after=n)`: `InboxItem`s (each once, in order) and `Frame`s.
    `send(frame)` writes a client frame on the current socket; `cursor` is the last
    `inbox_seq` handed out — keep it to start from there next time."""

    def __init__(
        self,
        client: ConversationsApi,
        after: int = 0,
        session_id: str | None = None,
        max_delay: float = 5,
    ) -> None:
        self.client = client
        self.cursor = after
        self.session_id = session_id
        self.max_delay = max_delay
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[InboxItem | Frame]:
        return self._run()

    async def send(self, frame: dict[str, Any]) -> None:
        if self._ws is None:
            raise ChateeClientError("the WebSocket is not connected (it reconnects by itself)")
        await self._ws.send(json.dumps(frame))

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> AsyncIterator[InboxItem | Frame]:
        delay = 0.2
        refused: Tokens | None = None  # tokens the server closed the socket on (4401)
        while not self._closed:
            used = None
            try:
                async for item in self._catch_up():
                    yield item
                used = await self.client.auth.fresh(force_from=refused)
                refused = None
                async with connect(
                    self._url(), additional_headers=self._headers(used), open_timeout=10
                ) as ws:
                    self._ws, delay = ws, 0.2
                    self.connected.set()
                    async for raw in ws:
                        async for out in self._handle(json.loads(raw)):
                            yield out
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == UNAUTHORIZED:
                    refused = used  # refresh before the next attempt
            except Unauthorized:
                raise  # the login is over: nothing to reconnect with
            except (OSError, TimeoutError, InvalidHandshake, httpx.TransportError):
                pass  # the server is away: try again
            except (Unavailable, RateLimited) as exc:
                delay = max(delay, exc.retry_after or 0)
            finally:
                self._ws = None
                self.connected.clear()
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def _handle(self, frame: dict[str, Any]) -> AsyncIterator[InboxItem | Frame]:
        seq = frame.get("inbox_seq")
        if isinstance(seq, int):
            if seq > self.cursor + 1:  # an early push: what comes before it is in the inbox
                async for item in self._catch_up():
                    yield item
            if seq == self.cursor + 1:
                self.cursor = seq
                yield InboxItem.model_validate(frame)
        elif frame.get("type") == "error" and frame.get("code") == "resync":
            # the server stopped pushing to this socket: page through with `sync` frames
            await self.send({"type": "sync", "after": self.cursor})
        elif frame.get("type") == "sync":
            for raw in frame.get("items") or []:
                if raw.get("inbox_seq", 0) > self.cursor:
                    self.cursor = raw["inbox_seq"]
                    yield InboxItem.model_validate(raw)
            if frame.get("has_more"):
                await self.send({"type": "sync", "after": self.cursor})
        else:
            yield Frame(str(frame.get("type", "")), frame)

    async def _catch_up(self) -> AsyncIterator[InboxItem]:
        while True:
            page = await self.client.sync(after=self.cursor)
            for item in page.items:
                if item.inbox_seq > self.cursor:
                    self.cursor = item.inbox_seq
                    yield item
            if not page.has_more:
                return

    def _url(self) -> str:
        url = httpx.URL(self.client.base_url + "/ws")
        url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
        params = {"after": str(self.cursor)}
        if self.session_id:
            params["session_id"] = self.session_id
        return str(url.copy_merge_params(params))

    @staticmethod
    def _headers(tokens: Tokens | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.access_token}"} if tokens else {}
