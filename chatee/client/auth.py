"""Bearer auth that keeps itself fresh: refresh before the access token expires, and once
after a 401, then retry the request.

Refresh tokens are single-use and a reuse revokes the whole login (chatee/people.py), so
concurrent requests must never refresh twice with the same one: one lock, and a request
whose token was already replaced by another refresh just retries with the new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

import httpx

from chatee.client.errors import ApiError, Unauthorized
from chatee.client.models import Tokens

REFRESH_PATH = "/api/v1/auth/refresh"

TokensCallback = Callable[[Tokens | None], None]


class TokenAuth(httpx.Auth):
    def __init__(self, on_tokens: TokensCallback | None = None) -> None:
        self.tokens: Tokens | None = None
        self.on_tokens = on_tokens
        self._lock = asyncio.Lock()
        self._refresh: Callable[[str], Awaitable[httpx.Response]] | None = None

    def bind(self, refresh: Callable[[str], Awaitable[httpx.Response]]) -> None:
        """How to call `/auth/refresh` (an unauthenticated request on the same client)."""
        self._refresh = refresh

    def set(self, tokens: Tokens | None) -> None:
        self.tokens = tokens
        if self.on_tokens is not None:
            self.on_tokens(tokens)

    async def fresh(self, force_from: Tokens | None = None) -> Tokens | None:
        """The current tokens, refreshed first if they are about to expire — or, with
        `force_from`, if they are still the ones a request was just refused with."""
        tokens = self.tokens
        if tokens is None or tokens.refresh_token is None:
            return tokens
        if force_from is None and not tokens.expiring():
            return tokens
        async with self._lock:
            current = self.tokens
            if current is None or (force_from is not None and current is not force_from):
                return current  # someone else refreshed (or logged out) meanwhile
            if force_from is None and not current.expiring():
                return current
            assert self._refresh is not None and current.refresh_token is not None
            response = await self._refresh(current.refresh_token)
            if response.status_code == 401:
                self.set(None)  # the login is over: sign in again
                raise ApiError.from_response(response)
            if response.status_code >= 400:
                raise ApiError.from_response(response)
            self.set(Tokens.from_answer(response.json()))
            return self.tokens

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if request.url.path.endswith(REFRESH_PATH):
            yield request
            return
        tokens = await self.fresh()
        if tokens is None:
            yield request
            return
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"
        response = yield request
        if response.status_code != 401 or tokens.refresh_token is None:
            return
        try:
            renewed = await self.fresh(force_from=tokens)
        except Unauthorized:
            return  # the caller sees the original 401
        if renewed is None:
            return
        request.headers["Authorization"] = f"Bearer {renewed.access_token}"
        yield request
