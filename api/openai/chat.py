"""`GET /v1/models` and `POST /v1/chat/completions` over `chatee.openai_sessions`.

A completion is one turn of a durable session: the client waits for it (or streams it), but the
turn runs in the session's workflow, so a client that goes away mid-stream loses nothing — the
reply is stored in the session all the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from sse_starlette import EventSourceResponse

from api.deps import SESSION_HEADER, OpenAICaller, SessionHeader, Svc
from api.openai.errors import ERROR_RESPONSES, OpenAIRoute, error_response, no_retry
from api.openai.schemas import ChatCompletionIn, chat_messages
from chatee import agents, openai_sessions
from chatee.agent_sessions import Done, Failed
from chatee.openai_sessions import Delta, Started

router = APIRouter(route_class=OpenAIRoute, responses=ERROR_RESPONSES)


@router.get("/models")
async def list_models(caller: OpenAICaller, svc: Svc) -> dict[str, Any]:
    """The caller's agents: a model id is the agent's name (its id works too)."""
    async with svc.sessionmaker() as db:
        found = await agents.list_agents(db, caller.user_id)
    return {"object": "list", "data": [model_out(a.name, a.created_at) for a in found]}


def model_out(name: str, created: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created.timestamp()), "owned_by": "you"}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionIn, caller: OpenAICaller, svc: Svc, session_header: SessionHeader = None
) -> Response:
    """The last user message runs as a turn of the session the call continues (README,
    "OpenAI-compatible API"); the answer names that session in `X-Chatee-Session-Id`."""
    named = session_header or (body.metadata or {}).get("session_id")
    started = await openai_sessions.start(
        svc, caller.user_id, body.model, chat_messages(body.messages), named
    )
    headers = {SESSION_HEADER: str(started.session_id)}
    completion = Completion(body.model, started)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        frames = completion.chunks(openai_sessions.reply(svc, started), usage)
        return EventSourceResponse(
            frames, ping=15, headers={**headers, "Cache-Control": "no-cache"}
        )
    async for part in openai_sessions.reply(svc, started):
        if isinstance(part, Done):
            return Response(
                json.dumps(completion.whole(part)), media_type="application/json", headers=headers
            )
        if isinstance(part, Failed):
            return turn_failed(part, headers)
    raise AssertionError("a turn's events end with turn.completed or turn.failed")


def turn_failed(failed: Failed, headers: dict[str, str]) -> Response:
    """A turn that ran and failed: a retry would run another turn, so the SDK is told not to."""
    message = f"the agent's turn failed: {failed.message}"
    return error_response(500, message, failed.type, headers={**headers, **no_retry()})


def usage_out(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = openai_sessions.usage_counts(usage)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class Completion:
    """One turn in the chat-completions shapes: whole, or as chunks."""

    def __init__(self, model: str, started: Started) -> None:
        self.id = f"chatcmpl-{started.accepted.turn_id}"
        self.model = model
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, done: Done) -> dict[str, Any]:
        message = {"role": "assistant", "content": done.content, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {
            **self._base("chat.completion"),
            "choices": [choice],
            "usage": usage_out(done.usage),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._frame({**self._base("chat.completion.chunk"), "choices": [choice]})

    @staticmethod
    def _frame(body: dict[str, Any]) -> dict[str, str]:
        return {"data": json.dumps(body)}

    async def chunks(
        self, parts: AsyncIterator[Delta | Done | Failed], include_usage: bool
    ) -> AsyncIterator[dict[str, str]]:
        """`data: {chunk}` frames, then `data: [DONE]`. A failed turn ends the stream with an
        `error` frame (the SDK raises it as an `APIError`)."""
        yield self.chunk({"role": "assistant", "content": ""})
        async for part in parts:
            if isinstance(part, Delta):
                yield self.chunk({"content": part.text})
            elif isinstance(part, Failed):
                message = f"the agent's turn failed: {part.message}"
                yield self._frame(
                    {"error": {"message": message, "type": "server_error", "code": part.type}}
                )
                return
            else:
                yield self.chunk({}, "stop")
                if include_usage:
                    body = self._base("chat.completion.chunk")
                    yield self._frame({**body, "choices": [], "usage": usage_out(part.usage)})
        yield {"data": "[DONE]"}
