"""A2A: an agent card and a JSON-RPC endpoint per agent under /a2a/agents/{agent_id}."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["a2a"])
