"""Agents: CRUD over the caller's own agents (anyone else's is a 404). The flow is in
chatee/agents.py; this view parses, renders and names the caller."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import DB, ReadDB, Svc, UserId
from api.schemas import AgentIn, AgentOut
from chatee import agents
from chatee.a2a_remote import redact_chain
from chatee.agents import AgentConfig
from chatee.models import Agent

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
        chain=redact_chain(agent.chain),  # remote agents' header values read "***"
        double_texting=agent.double_texting,
        memory=agent.memory,
        tool_policy=agent.tool_policy or {},
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_agent(body: AgentIn, user_id: UserId, db: DB, svc: Svc) -> AgentOut:
    agent = await agents.create_agent(svc, db, user_id, AgentConfig(**body.model_dump()))
    return agent_out(agent)


@router.get("")
async def list_agents(user_id: UserId, db: ReadDB) -> list[AgentOut]:
    return [agent_out(a) for a in await agents.list_agents(db, user_id)]


@router.get("/{agent_id}")
async def get_agent(agent_id: str, user_id: UserId, db: DB) -> AgentOut:
    return agent_out(await agents.owned_agent(db, user_id, agent_id))


@router.put("/{agent_id}")
async def replace_agent(
    agent_id: str, body: AgentIn, user_id: UserId, db: DB, svc: Svc
) -> AgentOut:
    config = AgentConfig(**body.model_dump())
    return agent_out(await agents.replace_agent(svc, db, user_id, agent_id, config))


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: str, user_id: UserId, db: DB) -> Response:
    await agents.delete_agent(db, user_id, agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
