"""The caller's agents: what they are (prompt, model, chain, tools) and what they remember."""

from __future__ import annotations

from typing import Any

from chatee.client.base import BaseClient
from chatee.client.errors import NotFound
from chatee.client.models import Agent, MemoryEntry


class AgentsApi(BaseClient):
    async def create_agent(self, name: str, **fields: Any) -> Agent:
        """Fields as `POST /agents` takes them: system_prompt, model, chain, tool_policy, …"""
        return await self._model(Agent, "POST", "/agents", json={"name": name, **fields})

    async def agents(self) -> list[Agent]:
        return await self._models(Agent, "GET", "/agents")

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

    # -- memory: what AG_MEMORY_LOAD loads and AG_MEMORY_STORE writes ----------------------

    async def agent_memory(self, agent_id: str, scope: str = "all") -> list[MemoryEntry]:
        """The agent's own entries (`scope` "agent") and its entries about you ("user")."""
        path = f"/agents/{agent_id}/memory"
        return await self._models(MemoryEntry, "GET", path, params={"scope": scope})

    async def add_agent_memory(
        self, agent_id: str, key: str, value: str, scope: str = "user"
    ) -> MemoryEntry:
        """Insert or replace the entry under `key`: about you ("user"), or the agent's own,
        which every user of it sees ("agent")."""
        body = {"key": key, "value": value, "scope": scope}
        return await self._model(MemoryEntry, "POST", f"/agents/{agent_id}/memory", json=body)

    async def delete_agent_memory(self, agent_id: str, entry_id: str) -> None:
        await self.request("DELETE", f"/agents/{agent_id}/memory/{entry_id}")

    async def my_memory(self) -> list[MemoryEntry]:
        """Everything any agent remembers about you."""
        return await self._models(MemoryEntry, "GET", "/memory")

    async def add_my_memory(self, agent_id: str, key: str, value: str) -> MemoryEntry:
        """Tell `agent_id` something about you (the same as `add_agent_memory`, scope user)."""
        body = {"agent_id": agent_id, "key": key, "value": value}
        return await self._model(MemoryEntry, "POST", "/memory", json=body)

    async def delete_my_memory(self, entry_id: str) -> None:
        """Make an agent forget something about you (entries about you only)."""
        await self.request("DELETE", f"/memory/{entry_id}")
