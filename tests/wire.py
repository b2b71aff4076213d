"""The HTTP API over raw httpx, for the tests whose subject is the wire itself: exact status
codes, headers, problem+json bodies, SSE framing. Everything else talks through the SDK
(`chatee.client`), as a user would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import aconnect_sse

if TYPE_CHECKING:
    from chatee.client import Client


class Api:
    """A logged-in user of the HTTP API, on raw httpx."""

    def __init__(self, client: httpx.AsyncClient, token: str, user_id: str) -> None:
        self.client = client
        self.token = token
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}

    @classmethod
    async def register(cls, client: httpx.AsyncClient, username: str | None = None) -> Api:
        username = username or f"user-{uuid.uuid4().hex[:12]}"
        r = await client.post(
            "/api/v1/auth/register", json={"username": username, "password": "correct horse"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return cls(client, body["token"], body["user_id"])

    @classmethod
    def of(cls, client: Client) -> Api:
        """The same login as an SDK client, on its connection."""
        assert client.tokens is not None
        return cls(client.http, client.tokens.access_token, client.tokens.user_id)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers, **(headers or {})}
        return await self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    async def create_agent(self, **fields: Any) -> dict[str, Any]:
        body = {
            "name": "helper",
            "system_prompt": "You are helpful.",
            "model": "scripted",
            **fields,
        }
        r = await self.request("POST", "/agents", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    async def create_session(self, agent_id: str) -> dict[str, Any]:
        r = await self.request("POST", "/sessions", json={"agent_id": agent_id})
        assert r.status_code == 201, r.text
        return r.json()

    async def new_session(self, **agent_fields: Any) -> dict[str, Any]:
        agent = await self.create_agent(**agent_fields)
        return await self.create_session(agent["id"])

    async def stream_turn(
        self, session_id: str, content: str, **extra: Any
    ) -> list[dict[str, Any]]:
        """POST /chat/stream and collect its SSE events until the stream ends."""
        body = {"session_id": session_id, "content": content, **extra}
        events = []
        async with aconnect_sse(
            self.client, "POST", "/api/v1/chat/stream", json=body, headers=self.headers
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.data:  # keep-alive pings carry no data
                    events.append({"id": sse.id, "event": sse.event, "data": json.loads(sse.data)})
        return events

    async def events(
        self,
        session_id: str,
        until: str | Callable[[dict[str, Any]], bool],
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> list[dict[str, Any]]:
        """GET /sessions/{id}/events until an event named `until` (or matching it) arrives."""
        done = until if callable(until) else (lambda e: e["event"] == until)
        events = []
        async with aconnect_sse(
            self.client,
            "GET",
            f"/api/v1/sessions/{session_id}/events",
            params=params,
            headers={**self.headers, **(headers or {})},
        ) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:  # keep-alive ping
                    continue
                events.append({"id": sse.id, "event": sse.event, "data": json.loads(sse.data)})
                if done(events[-1]):
                    break
        return events

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        r = await self.request("GET", f"/sessions/{session_id}/messages", params={"limit": 200})
        assert r.status_code == 200, r.text
        return r.json()["items"]
