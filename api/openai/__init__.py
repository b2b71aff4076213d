"""The OpenAI-compatible API at /v1 (README, "OpenAI-compatible API"): a thin adapter over
`chatee.openai_sessions`, so `openai.OpenAI(base_url="http://<api>/v1", api_key=<token>)`
talks to Chatee's agents."""

from __future__ import annotations

from fastapi import APIRouter

from api.openai import chat, errors, responses

router = APIRouter(prefix="/v1", tags=["openai"])
router.include_router(chat.router)
router.include_router(responses.router)
router.include_router(errors.unknown)  # last: every other /v1 path, in OpenAI's shape
