"""A logged-in user of the HTTP API, for the suite and the benchmarks: register, create agents
and sessions, run turns over SSE.

`httpx-sse` (the `dev` extra) is imported only by the streaming methods, so the rest works
with the product's own dependencies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx


class Api:
    """A logged-in user of the HTTP API."""

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
        from httpx_sse import aconnect_sse

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
        from httpx_sse import aconnect_sse

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
