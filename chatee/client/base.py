"""What every area of `Client` stands on: the connection, the login kept fresh, and one way to
call the API and read its answer as a typed model."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from chatee.client.auth import REFRESH_PATH, TokenAuth, TokensCallback
from chatee.client.errors import raise_for_problem
from chatee.client.models import Tokens

API = "/api/v1"
M = TypeVar("M", bound=BaseModel)


def segment(value: str) -> str:
    """A value as one path segment (an emoji, a tool name): nothing in it is read as `/`, `?`
    or `#`."""
    return quote(value, safe="")


class BaseClient:
    """The connection and the login every area of `Client` shares (arguments: see there)."""

    def __init__(
        self,
        base_url: str,
        tokens: Tokens | None = None,
        on_tokens: TokensCallback | None = None,
        timeout: float = 30,
        http: httpx.AsyncClient | None = None,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix(API)
        self.auth = TokenAuth(on_tokens)
        # a key is a bearer token that never expires and cannot be refreshed; whose it is, the
        # API does not say to a key (`/me` is not in any scope), so `user_id` stays unknown
        self.auth.tokens = Tokens("", api_key) if api_key else tokens
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
        return (self.tokens.user_id or None) if self.tokens else None

    # -- plumbing --------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """`path` under /api/v1; the JSON answer (None for 204), or the typed error."""
        response = await self.http.request(method, API + path, auth=self.auth, **kwargs)
        raise_for_problem(response)
        return None if response.status_code == 204 or not response.content else response.json()

    async def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(await self.request(method, path, **kwargs))

    async def _models(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        """A list answer — a bare JSON array, or a page's `items` (the API has both)."""
        rows = await self.request(method, path, **kwargs)
        if isinstance(rows, dict):
            rows = rows["items"]
        return [model.model_validate(row) for row in rows]

    async def _post_refresh(self, refresh_token: str) -> httpx.Response:
        return await self.http.post(REFRESH_PATH, json={"refresh_token": refresh_token}, auth=None)

    # -- signing in ------------------------------------------------------------------------

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
