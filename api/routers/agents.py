"""Agents: CRUD over the caller's own agents (anyone else's is a 404)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import DB, Res, UserId, parse_id
from api.errors import Problem, not_found
from api.schemas import AgentIn, AgentOut
from chatee import store
from chatee.ids import new_id
from chatee.llm import provider_names
from chatee.models import Agent, McpServer

router = APIRouter(prefix="/agents", tags=["agents"])


def agent_out(agent: Agent) -> AgentOut:
    return AgentOut(
        id=str(agent.id),
        name=agent.name,
        system_prompt=agent.system_prompt,
        provider=agent.provider,
        model=agent.model,
        temperature=agent.temperature,
        max_tokens=agent.max_tokens,
        mcp_servers=agent.mcp_servers,
        chain=agent.chain,
        double_texting=agent.double_texting,
        memory=agent.memory,
        tool_policy=agent.tool_policy or {},
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


async def _own_servers(db: DB, owner_id: int, server_ids: list[str]) -> None:
    """An agent may only name the caller's own MCP servers; another user's id is answered
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
            detail = f"mcp_servers: no MCP server of yours with id {raw!r}"
            raise Problem(422, detail, "/problems/validation")


async def _apply(agent: Agent, body: AgentIn, res: Res, db: DB) -> None:
    provider = body.provider or res.settings.llm_default_provider
    if provider not in provider_names(res.settings):
        known = ", ".join(provider_names(res.settings))
        raise Problem(
            422, f"provider: unknown provider {provider!r}; known: {known}", "/problems/validation"
        )
    await _own_servers(db, agent.owner_id, body.mcp_servers)
    agent.name = body.name
    agent.system_prompt = body.system_prompt
    agent.provider = provider
    agent.model = body.model or res.settings.llm_default_model
    agent.temperature = body.temperature
    agent.max_tokens = body.max_tokens
    agent.mcp_servers = body.mcp_servers
    agent.chain = list(body.chain)
    agent.double_texting = body.double_texting
    agent.memory = body.memory
    agent.tool_policy = body.tool_policy


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_agent(body: AgentIn, user_id: UserId, db: DB, res: Res) -> AgentOut:
    agent = Agent(id=new_id(), owner_id=user_id)
    await _apply(agent, body, res, db)
    db.add(agent)
    await db.commit()
    return agent_out(agent)


@router.get("")
async def list_agents(user_id: UserId, db: DB) -> list[AgentOut]:
    rows = await db.execute(select(Agent).where(Agent.owner_id == user_id).order_by(Agent.id))
    return [agent_out(a) for a in rows.scalars()]


async def owned_agent_or_404(db: AsyncSession, user_id: int, raw_id: str) -> Agent:
    """The caller's agent; another user's is "not found", exactly like a missing one."""
    agent = await store.owned_agent(db, user_id, parse_id(raw_id, "agent"))
    if agent is None:
        raise not_found("agent")
    return agent


@router.get("/{agent_id}")
async def get_agent(agent_id: str, user_id: UserId, db: DB) -> AgentOut:
    agent = await owned_agent_or_404(db, user_id, agent_id)
    return agent_out(agent)


@router.put("/{agent_id}")
async def replace_agent(
    agent_id: str, body: AgentIn, user_id: UserId, db: DB, res: Res
) -> AgentOut:
    agent = await owned_agent_or_404(db, user_id, agent_id)
    await _apply(agent, body, res, db)
    await db.commit()
    await db.refresh(agent)
    return agent_out(agent)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: str, user_id: UserId, db: DB) -> Response:
    agent = await owned_agent_or_404(db, user_id, agent_id)
    await db.delete(agent)
    await db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
