"""One agent turn end to end, through the SDK: real API and worker processes, Temporal, Redis,
SQLite, and the scripted OpenAI-compatible server behind the real `openai` client."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client as TemporalClient

from chatee.client import (
    Client,
    Conflict,
    MessageDelta,
    StepRetry,
    TurnCompleted,
    TurnFailed,
)
from chatee.devtools.llm_server import LLMServerThread
from tests.support import event_names, follow_until, new_session, stored_messages, turn_events


async def test_chat_stream_streams_a_turn_and_stores_both_messages(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee, system_prompt="You are a pirate.")
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker, [{"chunks": ["Ahoy", ", ", "matey", "!"], "usage": {"prompt_tokens": 7}}]
    )

    turn = chatee.stream_turn(session.id, f"hello {marker}")
    events = [e async for e in turn]

    assert event_names(events)[0] == "turn.started"
    assert [e.text for e in events if isinstance(e, MessageDelta)] == ["Ahoy", ", ", "matey", "!"]
    assert turn.text == "Ahoy, matey!"
    assert all(e.turn_id == turn.turn_id for e in events)
    assert all(e.session_id == session.id for e in events)
    done = events[-1]
    assert isinstance(done, TurnCompleted) and done is turn.final
    assert done.content == "Ahoy, matey!"
    assert done.usage["prompt_tokens"] == 7
    assert done.usage["completion_tokens"] > 0

    messages = await stored_messages(chatee, session.id)
    assert [(m.role, m.content) for m in reversed(messages)] == [
        ("user", f"hello {marker}"),
        ("assistant", "Ahoy, matey!"),
    ]
    assert messages[0].id == done.message_id
    assert all(m.turn_id == turn.turn_id for m in messages)

    sent = [r["body"] for r in llm.llm.requests if r["script"] == marker][0]
    assert sent["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert sent["messages"][-1] == {"role": "user", "content": f"hello {marker}"}
    assert sent["model"] == "scripted"


async def test_second_turn_sees_the_first_as_context(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    await chatee.stream_turn(session.id, f"first {marker}").run()
    await chatee.stream_turn(session.id, f"second {marker}").run()
    last = [r["body"] for r in llm.llm.requests if f"second {marker}" in str(r["body"])][0]
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]
    assert last["messages"][2]["content"] == f"echo: first {marker}"


async def test_events_resume_after_any_event_with_last_event_id(chatee: Client) -> None:
    session = await new_session(chatee)
    events = await turn_events(chatee, session.id, "resume me")
    all_events = await follow_until(chatee, session.id, "turn.completed")
    assert [e.id for e in all_events] == [e.id for e in events]

    for i, cut in enumerate(events[:-1]):
        rest = await follow_until(chatee, session.id, "turn.completed", after=cut.id)
        assert [e.id for e in rest] == [e.id for e in events[i + 1 :]]


async def test_live_events_reach_a_listener_opened_before_the_send(chatee: Client) -> None:
    session = await new_session(chatee)
    listener = asyncio.create_task(follow_until(chatee, session.id, "turn.completed", after=None))
    await asyncio.sleep(0.5)
    accepted = await chatee.send(session.id, "hi")
    events = await asyncio.wait_for(listener, 30)
    assert event_names(events)[0] == "turn.started"
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].turn_id == accepted.turn_id
    assert events[-1].content == "echo: hi"


async def test_send_is_idempotent_on_client_msg_id(chatee: Client) -> None:
    session = await new_session(chatee)
    first = await chatee.send(session.id, "only once", client_msg_id="c-1")
    second = await chatee.send(session.id, "only once", client_msg_id="c-1")
    assert first == second
    # a resend on the stream replays that turn's events
    replay = await chatee.stream_turn(session.id, "only once", client_msg_id="c-1").run()
    assert replay.completed and replay.turn_id == first.turn_id

    messages = await stored_messages(chatee, session.id)
    assert sorted(m.role for m in messages) == ["assistant", "user"]


async def test_messages_queue_while_a_turn_runs(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(f"slow {marker}", [{"text": "slow answer", "delay_ms": 800}])
    first = await chatee.send(session.id, f"slow {marker}")
    second = await chatee.stream_turn(session.id, f"quick {marker}").run()
    assert second.completed
    contents = [m.content for m in reversed(await stored_messages(chatee, session.id))]
    assert contents.index("slow answer") < contents.index(f"echo: quick {marker}")
    state = (await chatee.session(session.id)).state
    assert state is not None
    assert state.turns_completed == 2 and state.queue_length == 0
    assert first.turn_id != second.turn_id


async def test_reject_policy_refuses_a_message_while_busy(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee, double_texting="reject")
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "busy", "delay_ms": 1500}])
    await chatee.send(session.id, marker)
    await asyncio.sleep(0.3)
    with pytest.raises(Conflict) as refused:
        await chatee.send(session.id, "me too")
    assert refused.value.code == "session-busy"
    await follow_until(chatee, session.id, "turn.completed")
    contents = [m.content for m in await stored_messages(chatee, session.id)]
    assert "me too" not in contents  # the refused message is not left behind


async def test_provider_error_fails_the_turn_clearly(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"error": {"status": 401, "message": "bad key"}}])
    turn = await chatee.stream_turn(session.id, marker).run()
    assert isinstance(turn.final, TurnFailed)
    assert turn.final.error_type == "ProviderRejected"
    assert "401" in turn.final.error_message and "bad key" in turn.final.error_message
    roles = [m.role for m in await stored_messages(chatee, session.id)]
    assert roles == ["user"]  # no half-stored assistant message


async def test_transient_provider_error_is_retried_with_step_retry(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker, [{"chunks": ["partial "], "drop_after_chunks": 2}, {"text": "whole answer"}]
    )
    turn = chatee.stream_turn(session.id, marker)
    events = [e async for e in turn]
    seen = event_names(events)
    assert isinstance(turn.final, TurnCompleted)
    retry = next(e for e in events if isinstance(e, StepRetry))
    assert seen.index("step.retry") > seen.index("message.delta")  # partial text came first
    assert retry.dropped == "partial "  # the SDK threw the retried step's partial text away
    assert turn.final.content == turn.text == "whole answer"
    assert seen.count("turn.started") == 1 and seen.count("turn.completed") == 1
    assistant = [m for m in await stored_messages(chatee, session.id) if m.role == "assistant"]
    assert [m.content for m in assistant] == ["whole answer"]


async def test_session_is_a_searchable_workflow_in_temporal(
    chatee: Client, temporal_client: TemporalClient
) -> None:
    session = await new_session(chatee)
    await chatee.stream_turn(session.id, "visible?").run()
    assert session.workflow_id == f"session-{session.id}"
    desc = await temporal_client.get_workflow_handle(session.workflow_id).describe()
    assert desc.workflow_type == "AgentSession"
    found = []
    for _ in range(50):  # visibility is eventually consistent
        found = [
            w.id async for w in temporal_client.list_workflows(f"ChateeSessionId = '{session.id}'")
        ]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [session.workflow_id]
    by_user = [
        w.id async for w in temporal_client.list_workflows(f"ChateeUserId = '{chatee.user_id}'")
    ]
    assert session.workflow_id in by_user


async def test_closed_session_refuses_new_messages(chatee: Client) -> None:
    session = await new_session(chatee)
    assert (await chatee.close_session(session.id)).status == "closed"
    with pytest.raises(Conflict) as refused:
        await chatee.send(session.id, "x")
    assert refused.value.code == "session-closed"
