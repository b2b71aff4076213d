"""`POST /v1/responses` and `GET /v1/responses/{id}`: the Responses API over
`chatee.openai_sessions`. A response is a turn; its id names the session and the turn, so
`previous_response_id` continues that session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from sse_starlette import EventSourceResponse

from api.deps import SESSION_HEADER, OpenAICaller, SessionHeader, Svc
from api.openai.errors import ERROR_RESPONSES, OpenAIRoute
from api.openai.schemas import ResponseIn, response_messages
from chatee import openai_sessions
from chatee.agent_sessions import Done, Failed
from chatee.models import utcnow
from chatee.openai_sessions import Delta, TurnView

router = APIRouter(route_class=OpenAIRoute, responses=ERROR_RESPONSES)


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponseIn, caller: OpenAICaller, svc: Svc, session_header: SessionHeader = None
) -> Response:
    """The input's last user message runs as a turn (of `previous_response_id`'s session, the
    header's, `metadata.session_id`'s, or the one its history matches, else a new one)."""
    named = session_header or (body.metadata or {}).get("session_id")
    started = await openai_sessions.start(
        svc, caller.user_id, body.model, response_messages(body), named, body.previous_response_id
    )
    rid = openai_sessions.response_id(started.session_id, started.accepted.turn_id)
    view = TurnView(rid, body.model, "in_progress", "", {}, None, utcnow())
    headers = {SESSION_HEADER: str(started.session_id)}
    parts = openai_sessions.reply(svc, started)
    if body.stream:
        events = stream_events(view, parts)
        return EventSourceResponse(
            events, ping=15, headers={**headers, "Cache-Control": "no-cache"}
        )
    async for part in parts:
        if isinstance(part, Done):
            view = _ended(view, "completed", part.content, part.usage, None)
        elif isinstance(part, Failed):
            view = _ended(view, "failed", "", {}, part)
    return _json(response_out(view), headers)


@router.get("/responses/{response_id}", response_model=None)
async def get_response(response_id: str, caller: OpenAICaller, svc: Svc) -> Response:
    view = await openai_sessions.find_response(svc, caller.user_id, response_id)
    session_id, _ = openai_sessions.parse_response_id(response_id, "response_id")
    return _json(response_out(view), {SESSION_HEADER: str(session_id)})


def _json(body: dict[str, Any], headers: dict[str, str]) -> Response:
    return Response(json.dumps(body), media_type="application/json", headers=headers)


def _ended(
    view: TurnView, status: str, content: str, usage: dict[str, Any], error: Failed | None
) -> TurnView:
    return TurnView(view.response_id, view.model, status, content, usage, error, view.created_at)


def message_id(view: TurnView) -> str:
    return "msg_" + view.response_id.removeprefix("resp_")


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_out(view: TurnView, text: str, status: str) -> dict[str, Any]:
    return {
        "id": message_id(view),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text)],
    }


def response_out(view: TurnView) -> dict[str, Any]:
    """A response object as the SDK parses it (`response.output_text` joins its text)."""
    done = view.status == "completed"
    prompt, completion = openai_sessions.usage_counts(view.usage)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    error = None
    if view.error is not None:
        error = {"code": "server_error", "message": f"{view.error.type}: {view.error.message}"}
    return {
        "id": view.response_id,
        "object": "response",
        "created_at": int(view.created_at.timestamp()),
        "status": view.status,
        "model": view.model,
        "output": [message_out(view, view.content, "completed")] if done else [],
        "usage": usage if done else None,
        "error": error,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
    }


async def stream_events(
    view: TurnView, parts: AsyncIterator[Delta | Done | Failed]
) -> AsyncIterator[dict[str, str]]:
    """The semantic events the SDK parses, each `event: <type>` with its JSON: created, the
    message item and its text part opened, text deltas, both closed, then completed (or
    `response.failed`)."""
    sequence = 0

    def event(type_: str, **fields: Any) -> dict[str, str]:
        nonlocal sequence
        sequence += 1
        body = {"type": type_, "sequence_number": sequence, **fields}
        return {"event": type_, "data": json.dumps(body)}

    item = {"item_id": message_id(view), "output_index": 0}
    part = {**item, "content_index": 0}
    yield event("response.created", response=response_out(view))
    yield event("response.in_progress", response=response_out(view))
    yield event(
        "response.output_item.added", output_index=0, item=message_out(view, "", "in_progress")
    )
    yield event("response.content_part.added", **part, part=text_part(""))
    async for piece in parts:
        if isinstance(piece, Delta):
            yield event("response.output_text.delta", **part, delta=piece.text, logprobs=[])
        elif isinstance(piece, Failed):
            yield event(
                "response.failed", response=response_out(_ended(view, "failed", "", {}, piece))
            )
            return
        else:
            # the stored reply is the truth: a retried step may have said it differently
            final = _ended(view, "completed", piece.content, piece.usage, None)
            yield event("response.output_text.done", **part, text=piece.content, logprobs=[])
            yield event("response.content_part.done", **part, part=text_part(piece.content))
            yield event(
                "response.output_item.done",
                output_index=0,
                item=message_out(final, piece.content, "completed"),
            )
            yield event("response.completed", response=response_out(final))
