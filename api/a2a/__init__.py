"""A2A (README, "A2A"): an agent card and a JSON-RPC endpoint per agent under /a2a/agents/{id}.

The routes authenticate the caller (the REST API's bearer; an API key needs `chat`) and find
their agent — anyone else's is a 404 like a missing one — then hand the request to the a2a-sdk's
JSON-RPC dispatcher, which speaks A2A 1.0 and, on the same endpoint, 0.3.
"""

from __future__ import annotations

import logging
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from api.a2a import wire
from api.a2a.handler import CallContext, ChateeRequestHandler
from api.deps import ChatCaller, Svc
from chatee import agents
from chatee.models import Agent
from chatee.services import Services


class _ClientMistakes(logging.Filter):
    """The SDK logs a malformed request at ERROR with a traceback before it answers -32600 or
    -32602 — and then logs that answer as a warning line. A client's mistake is not our error:
    keep the warning, drop the traceback."""

    NOISE = frozenset(
        {
            "Failed to validate base JSON-RPC request",
            "Failed to parse request params",
            "Failed to validate base JSON-RPC request for v0.3",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.NOISE


for _name in ("a2a.server.routes.jsonrpc_dispatcher", "a2a.compat.v0_3.jsonrpc_adapter"):
    logging.getLogger(_name).addFilter(_ClientMistakes())

router = APIRouter(prefix="/a2a/agents", tags=["a2a"])
dispatcher = JsonRpcDispatcher(
    ChateeRequestHandler(), context_builder=CallContext(), enable_v0_3_compat=True
)
STREAM_PING_SECONDS = 3
RPC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a JSON-RPC 2.0 request: SendMessage, SendStreamingMessage, GetTask, "
        "CancelTask, SubscribeToTask (header `A2A-Version: 1.0`), or message/send, "
        "message/stream, tasks/get, tasks/cancel, tasks/resubscribe (A2A 0.3)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


async def _agent(svc: Services, user_id: int, agent_id: str) -> Agent:
    async with svc.sessionmaker() as db:
        return await agents.owned_agent(db, user_id, agent_id)


@router.get("/{agent_id}/.well-known/agent-card.json")
async def agent_card(agent_id: str, request: Request, caller: ChatCaller, svc: Svc) -> JSONResponse:
    """The agent's A2A card: its JSON-RPC endpoint, protocol versions and bearer auth."""
    agent = await _agent(svc, caller.user_id, agent_id)
    url = str(request.url_for("a2a_rpc", agent_id=str(agent.id)))
    card = wire.card(agent, url, agent.updated_at.isoformat())
    return JSONResponse(agent_card_to_dict(card))


@router.post("/{agent_id}", name="a2a_rpc", openapi_extra=RPC_BODY)
async def rpc(agent_id: str, request: Request, caller: ChatCaller, svc: Svc) -> Response:
    """The agent's A2A JSON-RPC endpoint (JSON, or SSE for the streaming methods)."""
    request.state.a2a = (svc, await _agent(svc, caller.user_id, agent_id))
    response = await dispatcher.handle_requests(request)
    if isinstance(response, EventSourceResponse):  # keep-alives under httpx's 5 s read timeout
        response.ping_interval = STREAM_PING_SECONDS
    return response
