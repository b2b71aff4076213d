"""One agent turn end to end: real API and worker processes, Temporal, Redis, SQLite, and the
scripted OpenAI-compatible server behind the real `openai` client."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import Client

from chatee.devtools.llm_server import LLMServerThread
from tests.support import Api


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


async def test_chat_stream_streams_a_turn_and_stores_both_messages(
    user: Api, llm: LLMServerThread
) -> None:
    session = await user.new_session(system_prompt="You are a pirate.")
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker, [{"chunks": ["Ahoy", ", ", "matey", "!"], "usage": {"prompt_tokens": 7}}]
    )

    events = await user.stream_turn(session["id"], f"hello {marker}")

    assert names(events)[0] == "turn.started"
    assert names(events)[-1] == "turn.completed"
    deltas = [e["data"]["text"] for e in events if e["event"] == "message.delta"]
    assert deltas == ["Ahoy", ", ", "matey", "!"]
    turn_id = events[0]["data"]["turn_id"]
    assert all(e["data"]["turn_id"] == turn_id for e in events)
    assert all(e["data"]["session_id"] == session["id"] for e in events)
    done = events[-1]["data"]
    assert done["content"] == "Ahoy, matey!"
    assert done["usage"]["prompt_tokens"] == 7
    assert done["usage"]["completion_tokens"] > 0

    messages = await user.messages(session["id"])
    assert [(m["role"], m["content"]) for m in reversed(messages)] == [
        ("user", f"hello {marker}"),
        ("assistant", "Ahoy, matey!"),
    ]
    assert messages[0]["id"] == done["message_id"]
    assert all(m["turn_id"] == turn_id for m in messages)

    sent = [r["body"] for r in llm.llm.requests if r["script"] == marker][0]
    assert sent["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert sent["messages"][-1] == {"role": "user", "content": f"hello {marker}"}
    assert sent["model"] == "scripted"


async def test_second_turn_sees_the_first_as_context(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session()
    marker = uuid.uuid4().hex
    await user.stream_turn(session["id"], f"first {marker}")
    await user.stream_turn(session["id"], f"second {marker}")
    last = [r["body"] for r in llm.llm.requests if f"second {marker}" in str(r["body"])][0]
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]
    assert last["messages"][2]["content"] == f"echo: first {marker}"


async def test_events_resume_after_any_event_with_last_event_id(user: Api) -> None:
    session = await user.new_session()
    events = await user.stream_turn(session["id"], "resume me")
    all_events = await user.events(session["id"], until="turn.completed", after="0")
    assert [e["id"] for e in all_events] == [e["id"] for e in events]

    for i, cut in enumerate(events[:-1]):
        rest = await user.events(
            session["id"], until="turn.completed", headers={"Last-Event-ID": cut["id"]}
        )
        assert [e["id"] for e in rest] == [e["id"] for e in events[i + 1 :]]


async def test_live_events_reach_a_listener_opened_before_the_send(user: Api) -> None:
    session = await user.new_session()
    listener = asyncio.create_task(user.events(session["id"], until="turn.completed"))
    await asyncio.sleep(0.5)
    r = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": "hi"}
    )
    assert r.status_code == 202
    turn_id = r.json()["turn_id"]
    events = await asyncio.wait_for(listener, 30)
    assert names(events)[0] == "turn.started"
    assert events[-1]["data"]["turn_id"] == turn_id
    assert events[-1]["data"]["content"] == "echo: hi"


async def test_send_is_idempotent_on_client_msg_id(user: Api) -> None:
    session = await user.new_session()
    body = {"session_id": session["id"], "content": "only once", "client_msg_id": "c-1"}
    first = await user.request("POST", "/chat/send", json=body)
    second = await user.request("POST", "/chat/send", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    replay = await user.stream_turn(**body)  # a resend on the stream replays that turn's events
    assert replay[-1]["event"] == "turn.completed"
    assert replay[-1]["data"]["turn_id"] == first.json()["turn_id"]

    messages = await user.messages(session["id"])
    assert sorted(m["role"] for m in messages) == ["assistant", "user"]


async def test_messages_queue_while_a_turn_runs(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session()
    marker = uuid.uuid4().hex
    llm.llm.script(f"slow {marker}", [{"text": "slow answer", "delay_ms": 800}])
    first = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": f"slow {marker}"}
    )
    second = await user.stream_turn(session["id"], f"quick {marker}")
    assert second[-1]["event"] == "turn.completed"
    messages = list(reversed(await user.messages(session["id"])))
    contents = [m["content"] for m in messages]
    assert contents.index("slow answer") < contents.index(f"echo: quick {marker}")
    state = (await user.request("GET", f"/sessions/{session['id']}")).json()["state"]
    assert state["turns_completed"] == 2 and state["queue_length"] == 0
    assert first.json()["turn_id"] != second[-1]["data"]["turn_id"]


async def test_reject_policy_refuses_a_message_while_busy(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session(double_texting="reject")
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"text": "busy", "delay_ms": 1500}])
    first = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": marker}
    )
    assert first.status_code == 202
    await asyncio.sleep(0.3)
    second = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": "me too"}
    )
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["type"] == "/problems/session-busy"
    await user.events(session["id"], until="turn.completed", after="0")
    contents = [m["content"] for m in await user.messages(session["id"])]
    assert "me too" not in contents  # the refused message is not left behind


async def test_provider_error_fails_the_turn_clearly(user: Api, llm: LLMServerThread) -> None:
    session = await user.new_session()
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"error": {"status": 401, "message": "bad key"}}])
    events = await user.stream_turn(session["id"], marker)
    assert events[-1]["event"] == "turn.failed"
    error = events[-1]["data"]["error"]
    assert error["type"] == "ProviderRejected"
    assert "401" in error["message"] and "bad key" in error["message"]
    roles = [m["role"] for m in await user.messages(session["id"])]
    assert roles == ["user"]  # no half-stored assistant message


async def test_transient_provider_error_is_retried_with_step_retry(
    user: Api, llm: LLMServerThread
) -> None:
    session = await user.new_session()
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker, [{"chunks": ["partial "], "drop_after_chunks": 2}, {"text": "whole answer"}]
    )
    events = await user.stream_turn(session["id"], marker)
    seen = names(events)
    assert seen[-1] == "turn.completed"
    assert "step.retry" in seen
    assert seen.index("step.retry") > seen.index("message.delta")  # partial text came first
    assert events[-1]["data"]["content"] == "whole answer"
    assert seen.count("turn.started") == 1 and seen.count("turn.completed") == 1
    assistant = [m for m in await user.messages(session["id"]) if m["role"] == "assistant"]
    assert [m["content"] for m in assistant] == ["whole answer"]


async def test_session_is_a_searchable_workflow_in_temporal(
    user: Api, temporal_client: Client
) -> None:
    session = await user.new_session()
    await user.stream_turn(session["id"], "visible?")
    assert session["workflow_id"] == f"session-{session['id']}"
    desc = await temporal_client.get_workflow_handle(session["workflow_id"]).describe()
    assert desc.workflow_type == "AgentSession"
    found = []
    for _ in range(50):  # visibility is eventually consistent
        found = [
            w.id
            async for w in temporal_client.list_workflows(f"ChateeSessionId = '{session['id']}'")
        ]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [session["workflow_id"]]
    by_user = [
        w.id async for w in temporal_client.list_workflows(f"ChateeUserId = '{user.user_id}'")
    ]
    assert session["workflow_id"] in by_user


async def test_closed_session_refuses_new_messages(user: Api) -> None:
    session = await user.new_session()
    r = await user.request("POST", f"/sessions/{session['id']}/close")
    assert r.status_code == 202 and r.json()["status"] == "closed"
    r = await user.request("POST", "/chat/send", json={"session_id": session["id"], "content": "x"})
    assert r.status_code == 409
    assert r.json()["type"] == "/problems/session-closed"
