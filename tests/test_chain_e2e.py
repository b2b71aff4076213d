"""Each ActionChain action type end to end: real API and worker processes, Temporal, Redis,
SQLite, and the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from chatee.devtools.llm_server import LLMServerThread
from tests.support import Api


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def requests_for(llm: LLMServerThread, marker: str) -> list[dict[str, Any]]:
    return [r["body"] for r in llm.llm.requests if marker in json.dumps(r["body"]["messages"])]


async def state_of(user: Api, session_id: str) -> dict[str, Any]:
    return (await user.request("GET", f"/sessions/{session_id}")).json()["state"]


async def test_accept_replies_without_a_model(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(chain=[{"type": "AG_ACCEPT", "text": "Got it, thanks!"}])
    marker = uuid.uuid4().hex
    events = await user.stream_turn(session["id"], f"hello {marker}")
    assert names(events) == ["turn.started", "step.started", "step.completed", "turn.completed"]
    assert events[-1]["data"]["content"] == "Got it, thanks!"
    assert requests_for(llm, marker) == []
    roles = [m["role"] for m in reversed(await user.messages(session["id"]))]
    assert roles == ["user", "assistant"]


async def test_refuse_stops_the_chain(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(chain=["AG_REFUSE", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    events = await user.stream_turn(session["id"], marker)
    assert events[-1]["event"] == "turn.completed"
    assert events[-1]["data"]["content"] == "Sorry, I can't help with that."
    assert requests_for(llm, marker) == []  # the generation step never ran
    assert [e["data"]["step"] for e in events if e["event"] == "step.started"] == [0]


async def test_self_decide_branches_on_the_models_choice(user: Api, llm: LLMServerThread) -> None:
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
    session = await user.new_session(chain=chain)
    greet, ask = uuid.uuid4().hex, uuid.uuid4().hex
    llm.llm.script(greet, [{"json": {"choice": "greeting"}}])
    llm.llm.script(ask, [{"json": {"choice": "question"}}, {"text": "The answer is 42."}])

    events = await user.stream_turn(session["id"], f"hi {greet}")
    assert events[-1]["data"]["content"] == "Hello to you too!"
    decided = [e for e in events if e["event"] == "step.completed"][0]
    assert decided["data"]["choice"] == "greeting"
    decide_request = requests_for(llm, greet)[0]
    assert decide_request["response_format"]["type"] == "json_schema"
    enum = decide_request["response_format"]["json_schema"]["schema"]["properties"]["choice"]
    assert enum["enum"] == ["greeting", "question"]

    events = await user.stream_turn(session["id"], f"what is it? {ask}")
    assert events[-1]["data"]["content"] == "The answer is 42."


async def test_memory_store_then_load_in_a_later_turn(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(chain=["AG_MEMORY_LOAD", "AG_SELF_GEN", "AG_MEMORY_STORE"])
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    llm.llm.script(first, [{"text": "Nice to meet you, Ada."}, {"json": {"name": "Ada"}}])
    events = await user.stream_turn(session["id"], f"I am Ada {first}")
    assert events[-1]["event"] == "turn.completed"
    stored = [e for e in events if e["event"] == "step.completed"][-1]
    assert "name" in stored["data"]["result"]
    assert events[-1]["data"]["content"] == "Nice to meet you, Ada."

    # a new session of the same agent remembers the user
    session2 = await user.create_session(session["agent_id"])
    await user.stream_turn(session2["id"], f"who am I? {second}")
    sent = requests_for(llm, second)[0]["messages"]
    notes = [m["content"] for m in sent if m["role"] == "system"]
    assert any("What you remember" in n and "name: Ada" in n for n in notes)


async def test_rag_retrieves_earlier_messages(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(chain=["AG_RAG", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    for fact in ["my cat is called Pixel", "I live in Lisbon", "my favourite colour is teal"]:
        await user.stream_turn(session["id"], fact)
    events = await user.stream_turn(session["id"], f"where do I live? {marker}")
    rag = [e for e in events if e["event"] == "step.completed"][0]
    assert rag["data"]["citations"], rag
    sent = requests_for(llm, marker)[0]["messages"]
    note = next(m["content"] for m in sent if m["content"].startswith("Relevant earlier"))
    first_hit = note.splitlines()[1]
    assert "Lisbon" in first_hit


async def test_call_human_waits_for_a_reply(user: Api, llm: LLMServerThread) -> None:
    chain = [
        {"type": "AG_CALL_HUMAN", "prompt": "Which plan should I use?", "timeout_seconds": 120},
        "AG_SELF_GEN",
    ]
    session = await user.new_session(chain=chain)
    marker = uuid.uuid4().hex
    turn = asyncio.create_task(user.stream_turn(session["id"], f"plan my trip {marker}"))
    request = (await user.events(session["id"], until="human.request", after="0"))[-1]["data"]
    assert request["prompt"] == "Which plan should I use?"
    state = await state_of(user, session["id"])
    assert state["status"] == "waiting_for_human"
    assert state["pending_human_request"] == request["request_id"]

    wrong = await user.request(
        "POST", f"/sessions/{session['id']}/human-reply", json={"request_id": "1-1", "content": "x"}
    )
    assert wrong.status_code == 404
    r = await user.request(
        "POST",
        f"/sessions/{session['id']}/human-reply",
        json={"request_id": request["request_id"], "content": "the cheap one"},
    )
    assert r.status_code == 202
    events = await asyncio.wait_for(turn, 30)
    assert events[-1]["event"] == "turn.completed"
    sent = requests_for(llm, marker)[0]["messages"]
    assert sent[-1] == {"role": "user", "content": "the cheap one"}


async def test_call_human_timeout_fails_or_continues(user: Api) -> None:
    failing = await user.new_session(
        chain=[{"type": "AG_CALL_HUMAN", "timeout_seconds": 1}, "AG_SELF_GEN"]
    )
    events = await user.stream_turn(failing["id"], "anyone?")
    assert events[-1]["event"] == "turn.failed"
    assert events[-1]["data"]["error"]["type"] == "human_timeout"

    lenient = await user.new_session(
        chain=[
            {"type": "AG_CALL_HUMAN", "timeout_seconds": 1, "on_timeout": "continue"},
            "AG_SELF_GEN",
        ]
    )
    events = await user.stream_turn(lenient["id"], "anyone?")
    assert events[-1]["event"] == "turn.completed"
    assert events[-1]["data"]["content"] == "echo: anyone?"


async def test_call_agent_uses_the_other_agents_answer(user: Api, llm: LLMServerThread) -> None:
    expert = await user.create_agent(
        name="expert", chain=[{"type": "AG_ACCEPT", "text": "Use a B-tree."}]
    )
    session = await user.new_session(
        chain=[{"type": "AG_CALL_AG", "agent_id": expert["id"]}, "AG_SELF_GEN"]
    )
    marker = uuid.uuid4().hex
    events = await user.stream_turn(session["id"], f"how do I index this? {marker}")
    assert events[-1]["event"] == "turn.completed"
    sent = requests_for(llm, marker)[-1]["messages"]
    assert any(m["role"] == "system" and "Use a B-tree." in m["content"] for m in sent)

    relay = await user.new_session(chain=[{"type": "AG_CALL_AG", "agent_id": expert["id"]}])
    events = await user.stream_turn(relay["id"], "just ask the expert")
    assert events[-1]["data"]["content"] == "Use a B-tree."


async def test_cancelling_the_turn_cancels_the_child_agent(
    user: Api, llm: LLMServerThread, temporal_client: Client
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "too late", "delay_ms": 20000}])
    slow = await user.create_agent(name="slow")
    session = await user.new_session(chain=[{"type": "AG_CALL_AG", "agent_id": slow["id"]}])
    turn = asyncio.create_task(user.stream_turn(session["id"], f"take your time {marker}"))
    await user.events(session["id"], until="step.started", after="0")
    turn_id = (await state_of(user, session["id"]))["active_turn"]["turn_id"]
    child = temporal_client.get_workflow_handle(f"task-{turn_id}-0")
    for _ in range(100):  # wait until the child's model call is under way
        if requests_for(llm, marker):
            break
        await asyncio.sleep(0.1)
    r = await user.request("POST", f"/sessions/{session['id']}/cancel", json={})
    assert r.status_code == 202
    events = await asyncio.wait_for(turn, 30)
    assert events[-1]["event"] == "turn.failed"
    assert events[-1]["data"]["error"]["type"] == "cancelled"
    for _ in range(100):
        if (await child.describe()).status == WorkflowExecutionStatus.CANCELED:
            break
        await asyncio.sleep(0.1)
    assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED
    assert [m["role"] for m in await user.messages(session["id"])] == ["user"]


async def test_cancel_stops_a_streaming_turn_without_a_half_stored_reply(
    user: Api, llm: LLMServerThread
) -> None:
    session = await user.new_session()
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": [f"w{i} " for i in range(50)], "chunk_delay_ms": 200}])
    turn = asyncio.create_task(user.stream_turn(session["id"], marker))
    await user.events(session["id"], until="message.delta", after="0")
    r = await user.request("POST", f"/sessions/{session['id']}/cancel", json={})
    assert r.status_code == 202
    events = await asyncio.wait_for(turn, 30)
    assert events[-1]["event"] == "turn.failed"
    assert events[-1]["data"]["error"]["type"] == "cancelled"
    assert 0 < names(events).count("message.delta") < 50
    await asyncio.sleep(1)
    assert [m["role"] for m in await user.messages(session["id"])] == ["user"]
    state = await state_of(user, session["id"])
    assert state["status"] == "idle" and state["turns_completed"] == 1


async def test_interrupt_policy_cancels_the_running_turn(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(double_texting="interrupt")
    marker = uuid.uuid4().hex
    llm.llm.script(f"first {marker}", [{"text": "slow", "delay_ms": 20000}])
    first = asyncio.create_task(user.stream_turn(session["id"], f"first {marker}"))
    await user.events(session["id"], until="step.started", after="0")
    second = await user.stream_turn(session["id"], f"second {marker}")
    assert second[-1]["event"] == "turn.completed"
    events = await asyncio.wait_for(first, 30)
    assert events[-1]["data"]["error"]["type"] == "interrupted"
    contents = [m["content"] for m in reversed(await user.messages(session["id"]))]
    assert contents == [f"first {marker}", f"second {marker}", f"echo: second {marker}"]


async def test_rollback_policy_removes_the_interrupted_turn(
    user: Api, llm: LLMServerThread
) -> None:
    session = await user.new_session(double_texting="rollback")
    marker = uuid.uuid4().hex
    llm.llm.script(f"first {marker}", [{"text": "slow", "delay_ms": 20000}])
    first = asyncio.create_task(user.stream_turn(session["id"], f"first {marker}"))
    await user.events(session["id"], until="step.started", after="0")
    second = await user.stream_turn(session["id"], f"second {marker}")
    events = await asyncio.wait_for(first, 30)
    assert events[-1]["data"]["error"]["type"] == "rolled_back"
    contents = [m["content"] for m in reversed(await user.messages(session["id"]))]
    assert contents == [f"second {marker}", f"echo: second {marker}"]
    sent = requests_for(llm, f"second {marker}")[-1]["messages"]
    assert all("first" not in str(m["content"]) for m in sent)
    assert second[-1]["event"] == "turn.completed"


async def test_turn_usage_sums_every_model_step(user: Api, llm: LLMServerThread) -> None:
    chain = [
        {"type": "AG_SELF_DECIDE", "options": ["a", "b"], "branches": {"a": ["AG_SELF_GEN"]}},
    ]
    session = await user.new_session(chain=chain)
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"json": {"choice": "a"}, "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
            {"text": "done", "usage": {"prompt_tokens": 20, "completion_tokens": 3}},
        ],
    )
    events = await user.stream_turn(session["id"], marker)
    usage = events[-1]["data"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (30, 5)
    reply = (await user.messages(session["id"]))[0]
    assert reply["usage"]["prompt_tokens"] == 20  # per message: its own step only


async def test_state_query_shows_steps_with_status_and_timing(
    user: Api, llm: LLMServerThread
) -> None:
    session = await user.new_session(chain=["AG_MEMORY_LOAD", "AG_SELF_GEN"])
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "slow", "delay_ms": 1500}])
    turn = asyncio.create_task(user.stream_turn(session["id"], marker))
    await user.events(
        session["id"],
        until=lambda e: e["event"] == "step.started" and e["data"]["step"] == 1,
        after="0",
    )
    state = await state_of(user, session["id"])
    steps = state["active_turn"]["steps"]
    assert [(s["action"], s["status"]) for s in steps] == [
        ("AG_MEMORY_LOAD", "completed"),
        ("AG_SELF_GEN", "running"),
    ]
    assert steps[0]["started_at"] and steps[0]["ended_at"] and steps[1]["ended_at"] is None
    await asyncio.wait_for(turn, 30)
