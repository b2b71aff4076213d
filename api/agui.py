"""AG-UI: `POST /api/v1/agents/{agent_id}/ag-ui` streams a turn as AG-UI events."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["ag-ui"])
