"""Agents: create, list, read, replace and delete an agent for its owner.

Anyone else's agent is "not found", exactly like a missing one, so ids leak nothing. An agent's
configuration is checked here, whatever surface it came through: a known LLM provider, MCP
servers of the owner's own, a chain that can run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatee.a2a_remote import check_chain
from chatee.errors import Invalid, NotFound
from chatee.ids import new_id, parse_id
from chatee.llm import provider_names
from chatee.models import Agent, McpServer
from chatee.services import Services
from workflows.chain import DEFAULT_CHAIN, ChainError, parse_chain


@dataclass(frozen=True)
class AgentConfig:
    """What the owner says an agent is; unset provider and model take the configured defaults."""

    name: str
    system_prompt: str = ""
    provider: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    mcp_servers: list[str] = field(default_factory=list)
    chain: list[Any] = field(default_factory=lambda: list(DEFAULT_CHAIN))
    double_texting: str = "queue"
    memory: dict[str, Any] = field(default_factory=dict)
    tool_policy: dict[str, str] = field(default_factory=dict)


async def find_owned_agent(db: AsyncSession, owner_id: int, agent_id: int) -> Agent | None:
    agent = await db.get(Agent, agent_id)
    return agent if agent is not None and agent.owner_id == owner_id else None


async def owned_agent(db: AsyncSession, owner_id: int, agent_id: int | str) -> Agent:
    """The owner's agent; another user's is "not found", exactly like a missing one."""
    if isinstance(agent_id, str):
        agent_id = parse_id(agent_id, "agent")
    agent = await find_owned_agent(db, owner_id, agent_id)
    if agent is None:
        raise NotFound("agent not found")
    return agent


async def list_agents(db: AsyncSession, owner_id: int) -> list[Agent]:
    rows = await db.execute(select(Agent).where(Agent.owner_id == owner_id).order_by(Agent.id))
    return list(rows.scalars())


async def create_agent(
    svc: Services, db: AsyncSession, owner_id: int, config: AgentConfig
) -> Agent:
    agent = Agent(id=new_id(), owner_id=owner_id)
    await _apply(svc, db, agent, config)
    db.add(agent)
    await db.commit()
    return agent


async def replace_agent(
    svc: Services, db: AsyncSession, owner_id: int, agent_id: int | str, config: AgentConfig
) -> Agent:
    agent = await owned_agent(db, owner_id, agent_id)
    await _apply(svc, db, agent, config)
    await db.commit()
    await db.refresh(agent)
    return agent


async def delete_agent(db: AsyncSession, owner_id: int, agent_id: int | str) -> None:
    agent = await owned_agent(db, owner_id, agent_id)
    await db.delete(agent)
    await db.commit()


async def _apply(svc: Services, db: AsyncSession, agent: Agent, config: AgentConfig) -> None:
    provider = config.provider or svc.settings.llm_default_provider
    if provider not in provider_names(svc.settings):
        known = ", ".join(provider_names(svc.settings))
        raise Invalid(f"provider: unknown provider {provider!r}; known: {known}")
    await _own_servers(db, agent.owner_id, config.mcp_servers)
    try:
        parse_chain(config.chain)
    except ChainError as exc:
        raise Invalid(str(exc)) from None
    # remote A2A agents: URLs past the deny-list, `***` headers kept from the stored chain
    chain = await check_chain(config.chain, svc.settings, stored=agent.chain)
    agent.name = config.name
    agent.system_prompt = config.system_prompt
    agent.provider = provider
    agent.model = config.model or svc.settings.llm_default_model
    agent.temperature = config.temperature
    agent.max_tokens = config.max_tokens
    agent.mcp_servers = config.mcp_servers
    agent.chain = chain
    agent.double_texting = config.double_texting
    agent.memory = config.memory
    agent.tool_policy = config.tool_policy


async def _own_servers(db: AsyncSession, owner_id: int, server_ids: list[str]) -> None:
    """An agent may only name the owner's own MCP servers; another user's id is answered
    exactly like an id that names nothing (no existence leak)."""
    ids = {int(s) for s in server_ids if s.isdigit() and len(s) <= 19 and int(s) < 1 << 63}
    found = set()
    if ids:
        rows = await db.execute(
            select(McpServer.id).where(McpServer.id.in_(ids), McpServer.owner_id == owner_id)
        )
        found = set(rows.scalars())
    for raw in server_ids:
        if not (raw.isdigit() and len(raw) <= 19 and int(raw) in found):
            raise Invalid(f"mcp_servers: no MCP server of yours with id {raw!r}")
