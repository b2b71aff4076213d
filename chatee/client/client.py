"""`Client`: the Chatee HTTP API from Python (async, on httpx), signed in and kept signed in.

One class, put together from one module per area of the API; what they share (the
connection, the login, `request`) is `chatee.client.base`."""

from __future__ import annotations

from chatee.client.agents import AgentsApi
from chatee.client.base import BaseClient
from chatee.client.conversations import ConversationsApi
from chatee.client.knowledge import KnowledgeApi
from chatee.client.mcp import McpApi
from chatee.client.people import PeopleApi
from chatee.client.sessions import SessionsApi


class Client(PeopleApi, AgentsApi, SessionsApi, ConversationsApi, KnowledgeApi, McpApi, BaseClient):
    """A user of one Chatee server.

    `base_url` is the server's root (`http://127.0.0.1:8080`). Sign in with `login` or
    `register`, pass saved `tokens`, or an `api_key` (`chk_…`, for a service: only its scopes,
    no refresh). `on_tokens` is called with every new pair (and None when the login ends), so
    a caller can persist them. The access token is refreshed before it expires and once after
    a 401, transparently. `http` is an httpx client of your own with that base URL (it may be
    shared by several `Client`s; they do not close it).
    """
