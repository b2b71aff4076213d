"""The AgentSession actor across continue-as-new, and its mailbox under resends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest
from temporalio.client import Client

from chatee.devtools.llm_server import LLMServerThread
from tests.support import Api, Stack, completes
from workflows.names import SEND_MESSAGE_UPDATE, STATE_QUERY
from workflows.types import SendMessage


@pytest.fixture(scope="module")
def short_run_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second API process whose sessions continue-as-new every 2 turns (the shared worker
    process serves them)."""
    env = {**stack.env, "CHATEE_TEMPORAL__TURNS_BEFORE_CONTINUE_AS_NEW": "2"}
    api = Stack(env=env, tmp=tmp_path_factory.mktemp("short-run"))
    api.start_api()
    yield api
    api.stop()


async def test_queued_turns_survive_continue_as_new(
    short_run_api: Stack, temporal_client: Client, llm: LLMServerThread
) -> None:
    async with httpx.AsyncClient(base_url=short_run_api.base, timeout=30) as client:
        user = await Api.register(client)
        session = await user.new_session()
        marker = uuid.uuid4().hex
        llm.llm.script(f"slow {marker}", [{"text": "slow", "delay_ms": 1000}])
        first_run = (
            await temporal_client.get_workflow_handle(session["workflow_id"]).describe()
        ).run_id

        sends = [f"slow {marker}"] + [f"m{i} {marker}" for i in range(4)]
        turn_ids = []
        for content in sends:  # all queued while the first turn is still running
            r = await user.request(
                "POST", "/chat/send", json={"session_id": session["id"], "content": content}
            )
            assert r.status_code == 202
            turn_ids.append(r.json()["turn_id"])

        async with asyncio.timeout(60):
            events = await user.events(session["id"], until=completes(turn_ids[-1]), after="0")
        completed = [e["data"]["turn_id"] for e in events if e["event"] == "turn.completed"]
        assert completed == turn_ids  # each turn once, in the order sent

        messages = list(reversed(await user.messages(session["id"])))
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert replies == ["slow"] + [f"echo: m{i} {marker}" for i in range(4)]
        assert [m["turn_id"] for m in messages if m["role"] == "assistant"] == turn_ids

        handle = temporal_client.get_workflow_handle(session["workflow_id"])
        desc = await handle.describe()
        assert desc.run_id != first_run  # it did continue as new
        state = await handle.query(STATE_QUERY)
        assert state["turns_completed"] == 5 and state["queue_length"] == 0
        history = await handle.fetch_history()
        assert len(history.events) < 60  # this run holds at most two turns


async def test_resent_update_is_not_a_second_turn(user: Api, temporal_client: Client) -> None:
    session = await user.new_session()
    r = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": "once"}
    )
    accepted = r.json()
    handle = temporal_client.get_workflow_handle(session["workflow_id"])
    resend = SendMessage(turn_id=accepted["turn_id"], message_id=accepted["message_id"])
    # a different update id, as after an API crash: the actor still knows the turn
    again = await handle.execute_update(SEND_MESSAGE_UPDATE, resend, id=f"retry-{uuid.uuid4()}")
    assert again == accepted["turn_id"]
    await user.events(session["id"], until="turn.completed", after="0")
    await asyncio.sleep(0.5)
    state = await handle.query(STATE_QUERY)
    assert state["turns_completed"] == 1 and state["queue_length"] == 0
    assert [m["role"] for m in await user.messages(session["id"])] == ["assistant", "user"]
