"""`Client`: the Chatee HTTP API from Python (async, on httpx), signed in and kept signed in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from chatee.client.auth import REFRESH_PATH, TokenAuth, TokensCallback
from chatee.client.errors import NotFound, raise_for_problem
from chatee.client.events import TurnEvent
from chatee.client.live import Live
from chatee.client.models import (
    Accepted,
    Agent,
    Conversation,
    ConversationMessage,
    ConversationMessagePage,
    ReadMarker,
    Session,
    SessionMessagePage,
    SyncPage,
    Tokens,
    User,
)
from chatee.client.stream import TurnStream, open_sse, sse_events

API = "/api/v1"
M = TypeVar("M", bound=BaseModel)


class Client:
    """A user of one Chatee server.

    `base_url` is the server's root (`http://127.0.0.1:8080`). Sign in with `login` or
    `register`, or pass saved `tokens`; `on_tokens` is called with every new pair (and None
    when the login ends), so a caller can persist them. The access token is refreshed before
    it expires and once after a 401, transparently. `http` is an httpx client of your own
    with that base URL (it may be shared by several `Client`s; they do not close it).
    """

    def __init__(
        self,
        base_url: str,
        tokens: Tokens | None = None,
        on_tokens: TokensCallback | None = None,
        timeout: float = 30,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix(API)
        self.auth = TokenAuth(on_tokens)
        self.auth.tokens = tokens
        self.auth.bind(self._post_refresh)
        # a caller's client may be shared by many users: auth goes on each request, not on it
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    @property
    def tokens(self) -> Tokens | None:
        return self.auth.tokens

    @property
    def user_id(self) -> str | None:
        return self.tokens.user_id if self.tokens else None

    # -- plumbing --------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """`path` under /api/v1; the JSON answer (None for 204), or the typed error."""
        response = await self.http.request(method, API + path, auth=self.auth, **kwargs)
        raise_for_problem(response)
        return None if response.status_code == 204 or not response.content else response.json()

    async def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(await self.request(method, path, **kwargs))

    async def _post_refresh(self, refresh_token: str) -> httpx.Response:
        return await self.http.post(REFRESH_PATH, json={"refresh_token": refresh_token}, auth=None)

    # -- auth ------------------------------------------------------------------------------

    async def register(
        self, username: str, password: str, display_name: str | None = None
    ) -> Tokens:
        body = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        return await self._sign_in("/auth/register", body)

    async def login(self, username: str, password: str) -> Tokens:
        return await self._sign_in("/auth/login", {"username": username, "password": password})

    async def _sign_in(self, path: str, body: dict[str, str]) -> Tokens:
        response = await self.http.post(API + path, json=body, auth=None)
        raise_for_problem(response)
        self.auth.set(Tokens.from_answer(response.json()))
        assert self.auth.tokens is not None
        return self.auth.tokens

    async def refresh(self) -> Tokens | None:
        """Trade the refresh token for a new pair now (normally automatic)."""
        return await self.auth.fresh(force_from=self.auth.tokens)

    async def logout(self) -> None:
        """End this login on the server (its tokens stop working) and forget it here."""
        tokens = self.auth.tokens
        if tokens is not None:
            await self.request("POST", "/auth/logout", json={"refresh_token": tokens.refresh_token})
        self.auth.set(None)

    # -- people ----------------------------------------------------------------------------

    async def me(self) -> User:
        return await self._model(User, "GET", "/me")

    async def update_me(self, display_name: str) -> User:
        return await self._model(User, "PATCH", "/me", json={"display_name": display_name})

    async def find_users(self, q: str, limit: int = 20) -> list[User]:
        """People whose username or display name starts with `q`."""
        page = await self.request("GET", "/users", params={"q": q, "limit": limit})
        return [User.model_validate(u) for u in page["items"]]

    async def user(self, user_id: str) -> User:
        return await self._model(User, "GET", f"/users/{user_id}")

    # -- agents ----------------------------------------------------------------------------

    async def create_agent(self, name: str, **fields: Any) -> Agent:
        """Fields as `POST /agents` takes them: system_prompt, model, chain, tool_policy, …"""
        return await self._model(Agent, "POST", "/agents", json={"name": name, **fields})

    async def agents(self) -> list[Agent]:
        return [Agent.model_validate(a) for a in await self.request("GET", "/agents")]

    async def agent(self, agent_id: str) -> Agent:
        return await self._model(Agent, "GET", f"/agents/{agent_id}")

    async def find_agent(self, name_or_id: str) -> Agent:
        """One of the caller's agents by id or by name (names are unique per owner)."""
        for agent in await self.agents():
            if name_or_id in (agent.id, agent.name):
                return agent
        raise NotFound(404, "not-found", f"no agent named or numbered {name_or_id!r}")

    async def update_agent(self, agent_id: str, **fields: Any) -> Agent:
        """`PUT` replaces the agent: fields not given are read from it first."""
        current = (await self.agent(agent_id)).model_dump(
            include={
                "name", "system_prompt", "provider", "model", "temperature", "max_tokens",
                "mcp_servers", "chain", "double_texting", "memory", "tool_policy",
            }
        )  # fmt: skip
        return await self._model(Agent, "PUT", f"/agents/{agent_id}", json={**current, **fields})

    async def delete_agent(self, agent_id: str) -> None:
        await self.request("DELETE", f"/agents/{agent_id}")

    # -- sessions and turns ----------------------------------------------------------------

    async def create_session(self, agent_id: str, title: str | None = None) -> Session:
        body = {"agent_id": agent_id, "title": title}
        return await self._model(Session, "POST", "/sessions", json=body)

    async def sessions(self, limit: int = 50) -> list[Session]:
        rows = await self.request("GET", "/sessions", params={"limit": limit})
        return [Session.model_validate(s) for s in rows]

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
        return await self._model(Session, "POST", f"/sessions/{session_id}/close")

    # -- conversations ---------------------------------------------------------------------

    async def create_conversation(
        self, type: str, members: list[str], title: str | None = None
    ) -> Conversation:
        """`private` (one other member) or `group`; members are user ids or your agents' ids."""
        body = {"type": type, "members": members, "title": title}
        return await self._model(Conversation, "POST", "/conversations", json=body)

    async def conversations(self, limit: int = 50) -> list[Conversation]:
        rows = await self.request("GET", "/conversations", params={"limit": limit})
        return [Conversation.model_validate(c) for c in rows]

    async def send_message(
        self, conversation_id: str, content: str, client_msg_id: str | None = None
    ) -> ConversationMessage:
        """Idempotent on `client_msg_id` (one is made up when not given)."""
        body = {"content": content, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        path = f"/conversations/{conversation_id}/messages"
        return await self._model(ConversationMessage, "POST", path, json=body)

    async def history(
        self, conversation_id: str, before_seq: int | None = None, limit: int = 50
    ) -> ConversationMessagePage:
        """Newest first; pass `next_before_seq` back as `before_seq` for older ones."""
        params: dict[str, Any] = {"limit": limit}
        if before_seq is not None:
            params["before_seq"] = before_seq
        path = f"/conversations/{conversation_id}/messages"
        return await self._model(ConversationMessagePage, "GET", path, params=params)

    async def mark_read(self, conversation_id: str, seq: int) -> ReadMarker:
        path = f"/conversations/{conversation_id}/read"
        return await self._model(ReadMarker, "POST", path, json={"seq": seq})

    async def sync(self, after: int = 0, limit: int | None = None) -> SyncPage:
        """One page of the inbox after `after` (the last `inbox_seq` you hold)."""
        params: dict[str, Any] = {"after": after}
        if limit:
            params["limit"] = limit
        return await self._model(SyncPage, "GET", "/sync", params=params)

    def live(self, after: int = 0, session_id: str | None = None) -> Live:
        """The WebSocket, kept open: see `Live`."""
        return Live(self, after, session_id)
