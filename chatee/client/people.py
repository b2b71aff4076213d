"""People and the caller's own account: profiles, the user directory, presence, the password,
deleting the account, and the API keys a service signs in with."""

from __future__ import annotations

from collections.abc import Iterable

from chatee.client.base import BaseClient
from chatee.client.models import ApiKey, NewApiKey, Presence, User


class PeopleApi(BaseClient):
    async def me(self) -> User:
        return await self._model(User, "GET", "/me")

    async def update_me(self, display_name: str) -> User:
        return await self._model(User, "PATCH", "/me", json={"display_name": display_name})

    async def find_users(self, q: str, limit: int = 20) -> list[User]:
        """People whose username or display name starts with `q`."""
        return await self._models(User, "GET", "/users", params={"q": q, "limit": limit})

    async def user(self, user_id: str) -> User:
        return await self._model(User, "GET", f"/users/{user_id}")

    async def presence(self, user_ids: Iterable[str]) -> list[Presence]:
        """Online or offline (with `last_seen`), for up to 200 people."""
        params = {"user_ids": ",".join(user_ids)}
        return await self._models(Presence, "GET", "/presence", params=params)

    # -- the account -----------------------------------------------------------------------

    async def change_password(self, current_password: str, new_password: str) -> None:
        """Every other login is signed out; this one stays valid (the server answers no new
        tokens: the ones held go on working). A wrong current password is `Forbidden`."""
        body = {"current_password": current_password, "new_password": new_password}
        await self.request("POST", "/me/password", json=body)

    async def delete_account(self, password: str) -> None:
        """Delete the account for good: its messages stay (from "Deleted user"), its agents,
        sessions, tokens and API keys go. The login is forgotten here too."""
        await self.request("DELETE", "/me", json={"password": password})
        self.auth.set(None)

    # -- API keys --------------------------------------------------------------------------

    async def create_api_key(self, name: str, scopes: list[str]) -> NewApiKey:
        """A key for a service: `Client(base_url, api_key=key.key)`. Scopes are `agents`,
        `chat`, `conversations`, `knowledge`, `mcp` (each also as `x:read` / `x:write`). The
        secret `key` is in this answer only. Keys cannot manage keys."""
        body = {"name": name, "scopes": scopes}
        return await self._model(NewApiKey, "POST", "/api-keys", json=body)

    async def api_keys(self) -> list[ApiKey]:
        """The live keys, newest first, without their secrets."""
        return await self._models(ApiKey, "GET", "/api-keys")

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke the key: from now on it is refused (`Unauthorized`)."""
        await self.request("DELETE", f"/api-keys/{key_id}")
