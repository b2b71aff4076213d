"""The AgentSession actor across continue-as-new, and its mailbox under resends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from temporalio.client import Client

from chatee.client import Client as ChateeClient
from chatee.client import TurnCompleted
from chatee.devtools.llm_server import LLMServerThread
from tests.support import Stack, completes, follow_until, new_session, signed_up, stored_messages
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
    async with await signed_up(short_run_api.base) as chatee:
        session = await new_session(chatee)
        marker = uuid.uuid4().hex
        llm.llm.script(f"slow {marker}", [{"text": "slow", "delay_ms": 1000}])
        handle = temporal_client.get_workflow_handle(session.workflow_id)
        first_run = (await handle.describe()).run_id

        sends = [f"slow {marker}"] + [f"m{i} {marker}" for i in range(4)]
        turn_ids = []
        for content in sends:  # all queued while the first turn is still running
            turn_ids.append((await chatee.send(session.id, content)).turn_id)

        async with asyncio.timeout(60):
            events = await follow_until(chatee, session.id, completes(turn_ids[-1]))
        completed = [e.turn_id for e in events if isinstance(e, TurnCompleted)]
        assert completed == turn_ids  # each turn once, in the order sent

        messages = list(reversed(await stored_messages(chatee, session.id)))
        replies = [m.content for m in messages if m.role == "assistant"]
        assert replies == ["slow"] + [f"echo: m{i} {marker}" for i in range(4)]
        assert [m.turn_id for m in messages if m.role == "assistant"] == turn_ids

        desc = await handle.describe()
        assert desc.run_id != first_run  # it did continue as new
        state = await handle.query(STATE_QUERY)
        assert state["turns_completed"] == 5 and state["queue_length"] == 0
        history = await handle.fetch_history()
        assert len(history.events) < 60  # this run holds at most two turns


async def test_resent_update_is_not_a_second_turn(
    chatee: ChateeClient, temporal_client: Client
) -> None:
    session = await new_session(chatee)
    accepted = await chatee.send(session.id, "once")
    handle = temporal_client.get_workflow_handle(session.workflow_id)
    resend = SendMessage(turn_id=accepted.turn_id, message_id=accepted.message_id)
    # a different update id, as after an API crash: the actor still knows the turn
    again = await handle.execute_update(SEND_MESSAGE_UPDATE, resend, id=f"retry-{uuid.uuid4()}")
    assert again == accepted.turn_id
    await follow_until(chatee, session.id, "turn.completed")
    await asyncio.sleep(0.5)
    state = await handle.query(STATE_QUERY)
    assert state["turns_completed"] == 1 and state["queue_length"] == 0
    assert [m.role for m in await stored_messages(chatee, session.id)] == ["assistant", "user"]
