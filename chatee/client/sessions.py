"""Agent sessions and their turns: send, stream, follow, cancel, answer a human request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from chatee.client.base import API, BaseClient
from chatee.client.events import TurnEvent
from chatee.client.models import Accepted, Session, SessionMessagePage
from chatee.client.stream import TurnStream, open_sse, sse_events


class SessionsApi(BaseClient):
    async def create_session(self, agent_id: str, title: str | None = None) -> Session:
        body = {"agent_id": agent_id, "title": title}
        return await self._model(Session, "POST", "/sessions", json=body)

    async def sessions(self, limit: int = 50) -> list[Session]:
        return await self._models(Session, "GET", "/sessions", params={"limit": limit})

    async def session(self, session_id: str) -> Session:
        """The session with its live `state` (the running turn's steps, a pending request)."""
        return await self._model(Session, "GET", f"/sessions/{session_id}")

    async def session_messages(
        self, session_id: str, before: str | None = None, limit: int = 50
    ) -> SessionMessagePage:
        """Newest first; pass `next_before` back as `before` for older ones."""
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        return await self._model(
            SessionMessagePage, "GET", f"/sessions/{session_id}/messages", params=params
        )

    async def send(
        self, session_id: str, content: str, client_msg_id: str | None = None
    ) -> Accepted:
        """Queue a turn without streaming it (`follow` or `stream_turn` for its events)."""
        body = {
            "session_id": session_id,
            "content": content,
            "client_msg_id": client_msg_id or uuid.uuid4().hex,
        }
        return await self._model(Accepted, "POST", "/chat/send", json=body)

    def stream_turn(
        self,
        session_id: str,
        content: str,
        client_msg_id: str | None = None,
        resume_timeout: float = 120,
    ) -> TurnStream:
        """Send a message and iterate the turn's typed events until it completes or fails,
        resuming after dropped connections; `.text` is the reply without retried partials."""
        return TurnStream(self, session_id, content, client_msg_id, resume_timeout)

    async def follow(self, session_id: str, after: str | None = None) -> AsyncIterator[TurnEvent]:
        """Every event of the session from now (or after stream id `after`; "0" replays what
        is retained), until the caller stops iterating. No resume: see `stream_turn`."""
        headers = {"Last-Event-ID": after} if after else {}
        url = f"{API}/sessions/{session_id}/events"
        async with open_sse(self.http, "GET", url, headers=headers, auth=self.auth) as source:
            async for event in sse_events(source):
                yield event

    async def cancel(self, session_id: str, turn_id: str | None = None) -> Session:
        """Cancel the running turn (only if it is `turn_id`, when given)."""
        body = {"turn_id": turn_id} if turn_id else None
        return await self._model(Session, "POST", f"/sessions/{session_id}/cancel", json=body)

    async def human_reply(self, session_id: str, request_id: str, content: str) -> None:
        """Answer a `HumanRequest` event of the running turn."""
        body = {"request_id": request_id, "content": content}
        await self.request("POST", f"/sessions/{session_id}/human-reply", json=body)

    async def close_session(self, session_id: str) -> Session:
        """Finish the queued turns, then end the session; later sends are `Conflict`."""
        return await self._model(Session, "POST", f"/sessions/{session_id}/close")

    async def delete_session(self, session_id: str) -> None:
        """Stop the session at once (a running turn ends with it) and delete its messages."""
        await self.request("DELETE", f"/sessions/{session_id}")
