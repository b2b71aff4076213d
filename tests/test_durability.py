"""Faults for real: a worker killed mid-stream, a provider that keeps failing, and stacks in
Temporal namespaces of their own so the shared stack's workers cannot step in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client as TemporalClient

from chatee.client import Invalid, MessageDelta, StepRetry, TurnCompleted, TurnEvent, TurnStream
from chatee.devstack import free_port
from chatee.devtools.llm_server import LLMServerThread
from tests.support import (
    WHOLE_ANSWER,
    Stack,
    follow_until,
    killable_turn,
    new_session,
    signed_up,
    stored_messages,
    turn_events,
)
from workflows.names import SEARCH_ATTRIBUTES

MakeStack = Callable[[dict[str, str]], Stack]


async def events_of(stream: TurnStream) -> list[TurnEvent]:
    return [e async for e in stream]


def is_part2(event: TurnEvent) -> bool:
    return isinstance(event, MessageDelta) and event.text == "part2 "


async def test_worker_killed_mid_stream_the_turn_completes_on_a_new_worker(
    isolated_stacks: MakeStack, llm: LLMServerThread, temporal_address: str
) -> None:
    stack, first_worker, marker = killable_turn(isolated_stacks, llm)
    async with await signed_up(stack.base, timeout=60) as chatee:
        session = await new_session(chatee)
        stream = chatee.stream_turn(session.id, marker)
        turn = asyncio.create_task(events_of(stream))
        await follow_until(chatee, session.id, is_part2)
        first_worker.kill()
        stack.start_worker()
        events = await asyncio.wait_for(turn, 90)

        seen = [e.event for e in events]
        assert isinstance(events[-1], TurnCompleted) and events[-1] is stream.final
        assert events[-1].content == WHOLE_ANSWER
        retry = seen.index("step.retry")
        assert "message.delta" in seen[:retry]  # the partial text the client must drop
        dropped = events[retry]
        assert isinstance(dropped, StepRetry) and dropped.dropped.startswith("part0 part1 part2 ")
        after_retry = [e.text for e in events[retry:] if isinstance(e, MessageDelta)]
        assert "".join(after_retry) == stream.text == WHOLE_ANSWER
        assert seen.count("turn.started") == 1 and seen.count("turn.completed") == 1
        # each of the turn's events reached the stream once, none lost
        replay = await follow_until(chatee, session.id, "turn.completed")
        assert [e.id for e in events] == [e.id for e in replay]
        assistant = [m for m in await stored_messages(chatee, session.id) if m.role == "assistant"]
        assert [m.content for m in assistant] == [WHOLE_ANSWER]

    # the worker registered our search attributes in its (fresh) namespace by itself
    client = await TemporalClient.connect(
        temporal_address, namespace=stack.env["CHATEE_TEMPORAL_NAMESPACE"]
    )
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert set(SEARCH_ATTRIBUTES) <= set(listed.custom_attributes)


async def test_failover_to_a_second_provider_when_the_first_keeps_failing(
    isolated_stacks: MakeStack, llm: LLMServerThread
) -> None:
    stack = isolated_stacks(
        {
            "CHATEE_LLM_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",  # nothing there
            "CHATEE_LLM_PROVIDERS__BACKUP__BASE_URL": llm.base_url,
            "CHATEE_LLM_FALLBACK_PROVIDER": "backup",
            "CHATEE_LLM_FALLBACK_MODEL": "backup-model",
            "CHATEE_TEMPORAL__LLM_MAX_ATTEMPTS": "2",
        }
    )
    stack.start_worker()
    stack.start_api()
    marker = uuid.uuid4().hex
    async with await signed_up(stack.base, timeout=60) as chatee:
        session = await new_session(chatee)
        events = await turn_events(chatee, session.id, marker)
        assert isinstance(events[-1], TurnCompleted), events[-1]
        assert events[-1].content == f"echo: {marker}"
        assert [e.reason for e in events if isinstance(e, StepRetry)] == ["retry", "failover"]
        sent = [r["body"] for r in llm.llm.requests if marker in str(r["body"]["messages"])]
        assert [b["model"] for b in sent] == ["backup-model"]

        # a configured provider name is accepted for agents; an unknown one is not
        agent = await chatee.create_agent("helper", model="scripted", provider="backup")
        assert agent.provider == "backup"
        with pytest.raises(Invalid) as refused:
            await chatee.create_agent("x", provider="nope")
        assert refused.value.status == 422 and "backup" in refused.value.detail
