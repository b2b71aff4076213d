"""AG-UI: `POST /api/v1/agents/{agent_id}/ag-ui` streams a run as AG-UI events (README, "AG-UI").

A thin adapter over `chatee.agui_runs`: the body is AG-UI's own `RunAgentInput`, the answer an
SSE stream of `ag_ui.core` events framed by `ag_ui.encoder.EventEncoder`. The run's turn runs in
its session's workflow, so a client that goes away mid-stream cancels nothing: the reply is
stored all the same, and the thread's next run carries on from it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial

from ag_ui.core import RunAgentInput, TextPart
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from api.agui.render import RunRenderer
from api.deps import ChatCaller, Svc
from chatee import agui_runs
from chatee.agui_runs import Answer, Said
from chatee.errors import Invalid

router = APIRouter(tags=["ag-ui"])


@router.post(
    "/agents/{agent_id}/ag-ui",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_agent(
    agent_id: str, body: RunAgentInput, request: Request, caller: ChatCaller, svc: Svc
) -> EventSourceResponse:
    """Run the thread's new user message as a turn of the thread's session (or resume the
    turn an interrupt paused) and stream it as AG-UI events."""
    run = await agui_runs.start(
        svc, caller.user_id, agent_id, body.thread_id, thread(body), answers(body)
    )
    renderer = RunRenderer(
        body.thread_id,
        body.run_id,
        body.messages,
        run.session_id,
        run.turn_id,
        partial(agui_runs.state, svc, run.session_id),
    )
    encoder = EventEncoder(accept=request.headers.get("accept"))

    async def frames() -> AsyncIterator[bytes]:
        async for event in renderer.run(agui_runs.events(svc, run)):
            yield encoder.encode(event).encode()

    return EventSourceResponse(frames(), ping=15, headers={"Cache-Control": "no-cache"})


def thread(body: RunAgentInput) -> list[Said]:
    """The thread's messages as plain text (None where a message is not only text)."""
    said = []
    for message in body.messages:
        content = getattr(message, "content", None)
        if isinstance(content, list):
            texts = [p.text for p in content if isinstance(p, TextPart)]
            content = "\n".join(texts) if len(texts) == len(content) else None
        said.append(Said(message.id, message.role, content if isinstance(content, str) else None))
    return said


def answers(body: RunAgentInput) -> list[Answer]:
    """Resume entries: a text payload is the answer; `{"text": …}` too; anything else is
    answered with its JSON."""
    found = []
    for entry in body.resume or []:
        resolved, payload = entry.status == "resolved", entry.payload
        if isinstance(payload, dict) and isinstance(payload.get("text"), str):
            payload = payload["text"]
        text = payload if isinstance(payload, str) else json.dumps(payload)
        if resolved and (payload is None or not text.strip()):
            raise Invalid("a resolved resume entry needs a payload: the answer", param="resume")
        found.append(Answer(entry.interrupt_id, resolved, text if resolved else ""))
    return found
