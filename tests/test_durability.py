"""Faults for real: a worker killed mid-stream, a provider that keeps failing, and stacks in
Temporal namespaces of their own so the shared stack's workers cannot step in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from chatee.devstack import free_port
from chatee.devtools.llm_server import LLMServerThread
from tests.support import WHOLE_ANSWER, Api, Stack, killable_turn
from workflows.names import SEARCH_ATTRIBUTES

MakeStack = Callable[[dict[str, str]], Stack]


async def test_worker_killed_mid_stream_the_turn_completes_on_a_new_worker(
    isolated_stacks: MakeStack, llm: LLMServerThread, temporal_address: str
) -> None:
    stack, first_worker, marker = killable_turn(isolated_stacks, llm)
    async with httpx.AsyncClient(base_url=stack.base, timeout=60) as client:
        user = await Api.register(client)
        session = await user.new_session()
        turn = asyncio.create_task(user.stream_turn(session["id"], marker))
        await user.events(
            session["id"],
            until=lambda e: e["event"] == "message.delta" and e["data"]["text"] == "part2 ",
            after="0",
        )
        first_worker.kill()
        stack.start_worker()
        events = await asyncio.wait_for(turn, 90)

        seen = [e["event"] for e in events]
        assert seen[-1] == "turn.completed"
        assert events[-1]["data"]["content"] == WHOLE_ANSWER
        retry = seen.index("step.retry")
        assert "message.delta" in seen[:retry]  # the partial text the client must drop
        after_retry = [e["data"]["text"] for e in events[retry:] if e["event"] == "message.delta"]
        assert "".join(after_retry) == WHOLE_ANSWER
        assert seen.count("turn.started") == 1 and seen.count("turn.completed") == 1
        assistant = [m for m in await user.messages(session["id"]) if m["role"] == "assistant"]
        assert [m["content"] for m in assistant] == [WHOLE_ANSWER]

    # the worker registered our search attributes in its (fresh) namespace by itself
    client = await Client.connect(
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
    async with httpx.AsyncClient(base_url=stack.base, timeout=60) as client:
        user = await Api.register(client)
        session = await user.new_session()
        events = await user.stream_turn(session["id"], marker)
        assert events[-1]["event"] == "turn.completed", events[-1]
        assert events[-1]["data"]["content"] == f"echo: {marker}"
        reasons = [e["data"]["reason"] for e in events if e["event"] == "step.retry"]
        assert reasons == ["retry", "failover"]
        sent = [r["body"] for r in llm.llm.requests if marker in str(r["body"]["messages"])]
        assert [b["model"] for b in sent] == ["backup-model"]

        # a configured provider name is accepted for agents; an unknown one is not
        assert (await user.create_agent(provider="backup"))["provider"] == "backup"
        r = await user.request("POST", "/agents", json={"name": "x", "provider": "nope"})
        assert r.status_code == 422 and "backup" in r.json()["detail"]
