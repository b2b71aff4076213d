"""Each ActionChain action type end to end, through the SDK: real API and worker processes,
Temporal, Redis, SQLite, and the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from chatee.client import (
    Client,
    HumanRequest,
    NotFound,
    SessionState,
    StepCompleted,
    StepStarted,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from chatee.devtools.llm_server import LLMServerThread
from tests.support import event_names, follow_until, new_session, stored_messages, turn_events


def requests_for(llm: LLMServerThread, marker: str) -> list[dict[str, Any]]:
    return [r["body"] for r in llm.llm.requests if marker in json.dumps(r["body"]["messages"])]


async def state_of(chatee: Client, session_id: str) -> SessionState:
    state = (await chatee.session(session_id)).state
    assert state is not None
    return state


def failed_as(event: TurnEvent | None, error_type: str) -> bool:
    """Whether `event` is the `turn.failed` of that error type."""
    return isinstance(event, TurnFailed) and event.error_type == error_type


async def test_accept_replies_without_a_model(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee, chain=[{"type": "AG_ACCEPT", "text": "Got it, thanks!"}])
    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, f"hello {marker}")
    expected = ["turn.started", "step.started", "step.completed", "turn.completed"]
    assert event_names(events) == expected
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "Got it, thanks!"
    assert requests_for(llm, marker) == []
    roles = [m.role for m in reversed(await stored_messages(chatee, session.id))]
    assert roles == ["user", "assistant"]


async def test_refuse_stops_the_chain(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee, chain=["AG_REFUSE", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, marker)
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "Sorry, I can't help with that."
    assert requests_for(llm, marker) == []  # the generation step never ran
    assert [e.step for e in events if isinstance(e, StepStarted)] == [0]


async def test_self_decide_branches_on_the_models_choice(
    chatee: Client, llm: LLMServerThread
) -> None:
    chain = [
        {
            "type": "AG_SELF_DECIDE",
            "question": "Is this a greeting or a question?",
            "options": ["greeting", "question"],
            "branches": {
                "greeting": [{"type": "AG_ACCEPT", "text": "Hello to you too!"}],
                "question": ["AG_SELF_GEN"],
            },
        }
    ]
    session = await new_session(chatee, chain=chain)
    greet, ask = uuid.uuid4().hex, uuid.uuid4().hex
    llm.llm.script(greet, [{"json": {"choice": "greeting"}}])
    llm.llm.script(ask, [{"json": {"choice": "question"}}, {"text": "The answer is 42."}])

    events = await turn_events(chatee, session.id, f"hi {greet}")
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "Hello to you too!"
    decided = [e for e in events if isinstance(e, StepCompleted)][0]
    assert decided.choice == "greeting"
    decide_request = requests_for(llm, greet)[0]
    assert decide_request["response_format"]["type"] == "json_schema"
    enum = decide_request["response_format"]["json_schema"]["schema"]["properties"]["choice"]
    assert enum["enum"] == ["greeting", "question"]

    turn = await chatee.stream_turn(session.id, f"what is it? {ask}").run()
    assert isinstance(turn.final, TurnCompleted)
    assert turn.final.content == "The answer is 42."


async def test_memory_store_then_load_in_a_later_turn(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee, chain=["AG_MEMORY_LOAD", "AG_SELF_GEN", "AG_MEMORY_STORE"])
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    llm.llm.script(first, [{"text": "Nice to meet you, Ada."}, {"json": {"name": "Ada"}}])
    events = await turn_events(chatee, session.id, f"I am Ada {first}")
    assert isinstance(events[-1], TurnCompleted)
    stored = [e for e in events if isinstance(e, StepCompleted)][-1]
    assert "name" in (stored.result or "")
    assert events[-1].content == "Nice to meet you, Ada."

    # a new session of the same agent remembers the user
    session2 = await chatee.create_session(session.agent_id)
    await chatee.stream_turn(session2.id, f"who am I? {second}").run()
    sent = requests_for(llm, second)[0]["messages"]
    notes = [m["content"] for m in sent if m["role"] == "system"]
    assert any("What you remember" in n and "name: Ada" in n for n in notes)


async def test_rag_retrieves_earlier_messages(chatee: Client, llm: LLMServerThread) -> None:
    session = await new_session(chatee, chain=["AG_RAG", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    for fact in ["my cat is called Pixel", "I live in Lisbon", "my favourite colour is teal"]:
        await chatee.stream_turn(session.id, fact).run()
    events = await turn_events(chatee, session.id, f"where do I live? {marker}")
    rag = [e for e in events if isinstance(e, StepCompleted)][0]
    assert rag.citations, rag.data
    sent = requests_for(llm, marker)[0]["messages"]
    note = next(m["content"] for m in sent if m["content"].startswith("Relevant earlier"))
    first_hit = note.splitlines()[1]
    assert "Lisbon" in first_hit


async def test_call_human_waits_for_a_reply(chatee: Client, llm: LLMServerThread) -> None:
    chain = [
        {"type": "AG_CALL_HUMAN", "prompt": "Which plan should I use?", "timeout_seconds": 120},
        "AG_SELF_GEN",
    ]
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    turn = asyncio.create_task(chatee.stream_turn(session.id, f"plan my trip {marker}").run())
    request = (await follow_until(chatee, session.id, "human.request"))[-1]
    assert isinstance(request, HumanRequest)
    assert request.prompt == "Which plan should I use?"
    state = await state_of(chatee, session.id)
    assert state.status == "waiting_for_human"
    assert state.pending_human_request == request.request_id

    with pytest.raises(NotFound):
        await chatee.human_reply(session.id, "1-1", "x")
    await chatee.human_reply(session.id, request.request_id, "the cheap one")
    assert (await asyncio.wait_for(turn, 30)).completed
    sent = requests_for(llm, marker)[0]["messages"]
    assert sent[-1] == {"role": "user", "content": "the cheap one"}


async def test_call_human_timeout_fails_or_continues(chatee: Client) -> None:
    failing = await new_session(
        chatee, chain=[{"type": "AG_CALL_HUMAN", "timeout_seconds": 1}, "AG_SELF_GEN"]
    )
    turn = await chatee.stream_turn(failing.id, "anyone?").run()
    assert failed_as(turn.final, "human_timeout")

    lenient = await new_session(
        chatee,
        chain=[
            {"type": "AG_CALL_HUMAN", "timeout_seconds": 1, "on_timeout": "continue"},
            "AG_SELF_GEN",
        ],
    )
    turn = await chatee.stream_turn(lenient.id, "anyone?").run()
    assert isinstance(turn.final, TurnCompleted)
    assert turn.final.content == "echo: anyone?"


async def test_call_agent_uses_the_other_agents_answer(
    chatee: Client, llm: LLMServerThread
) -> None:
    expert = await chatee.create_agent(
        name="expert",
        system_prompt="You are helpful.",
        model="scripted",
        chain=[{"type": "AG_ACCEPT", "text": "Use a B-tree."}],
    )
    session = await new_session(
        chatee, chain=[{"type": "AG_CALL_AG", "agent_id": expert.id}, "AG_SELF_GEN"]
    )
    marker = uuid.uuid4().hex
    turn = await chatee.stream_turn(session.id, f"how do I index this? {marker}").run()
    assert turn.completed
    sent = requests_for(llm, marker)[-1]["messages"]
    assert any(m["role"] == "system" and "Use a B-tree." in m["content"] for m in sent)

    relay = await new_session(chatee, chain=[{"type": "AG_CALL_AG", "agent_id": expert.id}])
    turn = await chatee.stream_turn(relay.id, "just ask the expert").run()
    assert isinstance(turn.final, TurnCompleted)
    assert turn.final.content == "Use a B-tree."


async def test_cancelling_the_turn_cancels_the_child_agent(
    chatee: Client, llm: LLMServerThread, temporal_client: TemporalClient
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "too late", "delay_ms": 20000}])
    slow = await chatee.create_agent(
        name="slow", system_prompt="You are helpful.", model="scripted"
    )
    session = await new_session(chatee, chain=[{"type": "AG_CALL_AG", "agent_id": slow.id}])
    turn = asyncio.create_task(chatee.stream_turn(session.id, f"take your time {marker}").run())
    await follow_until(chatee, session.id, "step.started")
    active = (await state_of(chatee, session.id)).active_turn
    assert active is not None
    child = temporal_client.get_workflow_handle(f"task-{active.turn_id}-0")
    for _ in range(100):  # wait until the child's model call is under way
        if requests_for(llm, marker):
            break
        await asyncio.sleep(0.1)
    assert (await chatee.cancel(session.id)).id == session.id  # accepted
    ended = await asyncio.wait_for(turn, 30)
    assert failed_as(ended.final, "cancelled")
    for _ in range(100):
        if (await child.describe()).status == WorkflowExecutionStatus.CANCELED:
            break
        await asyncio.sleep(0.1)
    assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED
    assert [m.role for m in await stored_messages(chatee, session.id)] == ["user"]


async def test_cancel_stops_a_streaming_turn_without_a_half_stored_reply(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": [f"w{i} " for i in range(50)], "chunk_delay_ms": 200}])
    turn = asyncio.create_task(turn_events(chatee, session.id, marker))
    await follow_until(chatee, session.id, "message.delta")
    assert (await chatee.cancel(session.id)).id == session.id  # accepted
    events = await asyncio.wait_for(turn, 30)
    assert failed_as(events[-1], "cancelled")
    assert 0 < event_names(events).count("message.delta") < 50
    await asyncio.sleep(1)
    assert [m.role for m in await stored_messages(chatee, session.id)] == ["user"]
    state = await state_of(chatee, session.id)
    assert state.status == "idle" and state.turns_completed == 1


async def test_interrupt_policy_cancels_the_running_turn(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee, double_texting="interrupt")
    marker = uuid.uuid4().hex
    llm.llm.script(f"first {marker}", [{"text": "slow", "delay_ms": 20000}])
    first = asyncio.create_task(chatee.stream_turn(session.id, f"first {marker}").run())
    await follow_until(chatee, session.id, "step.started")
    second = await chatee.stream_turn(session.id, f"second {marker}").run()
    assert second.completed
    ended = await asyncio.wait_for(first, 30)
    assert failed_as(ended.final, "interrupted")
    contents = [m.content for m in reversed(await stored_messages(chatee, session.id))]
    assert contents == [f"first {marker}", f"second {marker}", f"echo: second {marker}"]


async def test_rollback_policy_removes_the_interrupted_turn(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee, double_texting="rollback")
    marker = uuid.uuid4().hex
    llm.llm.script(f"first {marker}", [{"text": "slow", "delay_ms": 20000}])
    first = asyncio.create_task(chatee.stream_turn(session.id, f"first {marker}").run())
    await follow_until(chatee, session.id, "step.started")
    second = await chatee.stream_turn(session.id, f"second {marker}").run()
    ended = await asyncio.wait_for(first, 30)
    assert failed_as(ended.final, "rolled_back")
    contents = [m.content for m in reversed(await stored_messages(chatee, session.id))]
    assert contents == [f"second {marker}", f"echo: second {marker}"]
    sent = requests_for(llm, f"second {marker}")[-1]["messages"]
    assert all("first" not in str(m["content"]) for m in sent)
    assert second.completed


async def test_turn_usage_sums_every_model_step(chatee: Client, llm: LLMServerThread) -> None:
    chain = [
        {"type": "AG_SELF_DECIDE", "options": ["a", "b"], "branches": {"a": ["AG_SELF_GEN"]}},
    ]
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"json": {"choice": "a"}, "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
            {"text": "done", "usage": {"prompt_tokens": 20, "completion_tokens": 3}},
        ],
    )
    turn = await chatee.stream_turn(session.id, marker).run()
    assert isinstance(turn.final, TurnCompleted)
    usage = turn.final.usage
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (30, 5)
    reply = (await stored_messages(chatee, session.id))[0]
    assert reply.usage is not None
    assert reply.usage["prompt_tokens"] == 20  # per message: its own step only


async def test_state_query_shows_steps_with_status_and_timing(
    chatee: Client, llm: LLMServerThread
) -> None:
    session = await new_session(chatee, chain=["AG_MEMORY_LOAD", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "slow", "delay_ms": 1500}])
    turn = asyncio.create_task(chatee.stream_turn(session.id, marker).run())
    await follow_until(chatee, session.id, lambda e: isinstance(e, StepStarted) and e.step == 1)
    active = (await state_of(chatee, session.id)).active_turn
    assert active is not None
    steps = active.steps
    assert [(s.action, s.status) for s in steps] == [
        ("AG_MEMORY_LOAD", "completed"),
        ("AG_SELF_GEN", "running"),
    ]
    assert steps[0].started_at and steps[0].ended_at and steps[1].ended_at is None
    await asyncio.wait_for(turn, 30)
