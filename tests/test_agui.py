"""AG-UI (`POST /api/v1/agents/{id}/ag-ui`) against the real stack: every SSE data line is
validated into its `ag_ui.core` event class, and each run is checked the way AG-UI clients
verify a stream (one RUN_STARTED first, one RUN_FINISHED/RUN_ERROR last, everything opened is
closed)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    Event,
    EventType,
    MessagesSnapshotEvent,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from httpx_sse import aconnect_sse
from pydantic import TypeAdapter

from chatee.devtools.llm_server import LLMServerThread
from chatee.mcp import tool_name
from tests.support import WHOLE_ANSWER, Api, Stack, killable_turn

EVENT: TypeAdapter[Any] = TypeAdapter(Event)
REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "chatee" / "devtools" / "mcp_demo.py")
NPM_CACHE = REPO / ".cache" / "npm-agui"
AGUI_CLIENT = ("@ag-ui/client", "1.0.0")
PROBLEM = "application/problem+json"


# -- a client's side of a run ---------------------------------------------------------------------


def said(role: str, content: str, message_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id or uuid.uuid4().hex, "role": role, "content": content}


def run_input(thread: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A RunAgentInput as AG-UI clients send it (camelCase, every optional part present)."""
    return {
        "threadId": thread,
        "runId": uuid.uuid4().hex,
        "messages": messages,
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


def path(agent_id: str) -> str:
    return f"/agents/{agent_id}/ag-ui"


def url(agent_id: str) -> str:
    return "/api/v1" + path(agent_id)


async def run(
    user: Api,
    agent_id: str,
    body: dict[str, Any],
    on_event: Callable[[BaseEvent], Any] | None = None,
) -> list[BaseEvent]:
    """One run: its events, each validated into its class; then the stream is verified."""
    events: list[BaseEvent] = []
    headers = {**user.headers, "Accept": "text/event-stream"}
    async with aconnect_sse(user.client, "POST", url(agent_id), json=body, headers=headers) as s:
        assert s.response.status_code == 200, await s.response.aread()
        async for sse in s.aiter_sse():
            if not sse.data:  # keep-alive
                continue
            event = EVENT.validate_json(sse.data)
            assert not event.model_extra, f"fields AG-UI does not define: {event.model_extra}"
            events.append(event)
            if on_event is not None:
                await on_event(event)
    verify(events, body)
    return events


def verify(events: list[BaseEvent], body: dict[str, Any]) -> None:
    """What AG-UI clients check of a run's stream."""
    kinds = [e.type for e in events]
    assert kinds[0] == EventType.RUN_STARTED
    assert (events[0].thread_id, events[0].run_id) == (body["threadId"], body["runId"])
    assert kinds[-1] in (EventType.RUN_FINISHED, EventType.RUN_ERROR)
    assert kinds.count(EventType.RUN_STARTED) == 1
    assert kinds.count(EventType.RUN_FINISHED) + kinds.count(EventType.RUN_ERROR) == 1
    texts: set[str] = set()
    calls: set[str] = set()
    steps: set[str] = set()
    for e in events:
        match e.type:
            case EventType.TEXT_MESSAGE_START:
                assert e.message_id not in texts
                texts.add(e.message_id)
            case EventType.TEXT_MESSAGE_CONTENT:
                assert e.message_id in texts
            case EventType.TEXT_MESSAGE_END:
                texts.remove(e.message_id)
            case EventType.TOOL_CALL_START:
                calls.add(e.tool_call_id)
            case EventType.TOOL_CALL_ARGS:
                assert e.tool_call_id in calls
            case EventType.TOOL_CALL_END:
                calls.remove(e.tool_call_id)
            case EventType.STEP_STARTED:
                assert e.step_name not in steps
                steps.add(e.step_name)
            case EventType.STEP_FINISHED:
                steps.remove(e.step_name)
    assert not texts and not calls and not steps, "left open at the end of the run"


def apply(messages: list[Any], events: list[BaseEvent]) -> list[Any]:
    """The messages an AG-UI client holds after a run (its default event application)."""
    messages = list(messages)
    for e in events:
        if isinstance(e, TextMessageStartEvent):
            messages.append(AssistantMessage(id=e.message_id, content=""))
        elif isinstance(e, TextMessageContentEvent):
            next(m for m in messages if m.id == e.message_id).content += e.delta
        elif isinstance(e, MessagesSnapshotEvent):
            messages = list(e.messages)
    return messages


def text_of(events: list[BaseEvent]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextMessageContentEvent))


def finished(events: list[BaseEvent]) -> RunFinishedEvent:
    assert isinstance(events[-1], RunFinishedEvent), events[-1]
    return events[-1]


def of(events: list[BaseEvent], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# -- the tests ------------------------------------------------------------------------------------


async def test_a_text_turn_streams_as_agui_events(user: Api) -> None:
    agent = await user.create_agent()
    marker = uuid.uuid4().hex
    body = run_input(f"thread-{marker}", [said("user", f"hello {marker}")])

    events = await run(user, agent["id"], body)

    kinds = [e.type for e in events]
    assert kinds[:2] == [EventType.RUN_STARTED, EventType.STATE_SNAPSHOT]
    assert kinds[-2:] == [EventType.STATE_SNAPSHOT, EventType.RUN_FINISHED]
    assert EventType.STEP_STARTED in kinds and EventType.STEP_FINISHED in kinds
    assert kinds.index(EventType.TEXT_MESSAGE_START) < kinds.index(EventType.TEXT_MESSAGE_END)
    assert text_of(events) == f"echo: hello {marker}"
    done = finished(events)
    assert done.outcome is None  # success
    assert done.result["content"] == f"echo: hello {marker}"
    session_id = done.result["sessionId"]
    snapshot = of(events, StateSnapshotEvent)[0].snapshot
    assert snapshot["session_id"] == session_id and "status" in snapshot

    stored = await user.messages(session_id)
    assert [(m["role"], m["content"]) for m in reversed(stored)] == [
        ("user", f"hello {marker}"),
        ("assistant", f"echo: hello {marker}"),
    ]


async def test_the_next_run_on_a_thread_continues_its_session_storing_nothing_twice(
    user: Api,
) -> None:
    agent = await user.create_agent()
    thread = f"thread-{uuid.uuid4().hex}"
    first_message = said("user", "first question")
    first = await run(user, agent["id"], run_input(thread, [first_message]))
    session_id = finished(first).result["sessionId"]
    reply_id = of(first, TextMessageStartEvent)[0].message_id
    history = [first_message, said("assistant", text_of(first), reply_id)]

    second_body = run_input(thread, [*history, said("user", "second question")])
    second = await run(user, agent["id"], second_body)
    assert finished(second).result["sessionId"] == session_id
    assert text_of(second) == "echo: second question"

    # the same run sent again (a client retrying): the same turn's answer, no new turn
    again = await run(user, agent["id"], {**second_body, "runId": uuid.uuid4().hex})
    assert finished(again).result["turnId"] == finished(second).result["turnId"]
    assert text_of(again) == "echo: second question"

    stored = await user.messages(session_id)
    assert [(m["role"], m["content"]) for m in reversed(stored)] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
        ("assistant", "echo: second question"),
    ]
    sessions = (await user.request("GET", "/sessions")).json()
    assert [s["id"] for s in sessions if s["agent_id"] == agent["id"]] == [session_id]


async def test_first_runs_racing_on_a_thread_share_one_session(user: Api) -> None:
    agent = await user.create_agent()
    thread = f"thread-{uuid.uuid4().hex}"
    runs = await asyncio.gather(
        *(run(user, agent["id"], run_input(thread, [said("user", f"q{i}")])) for i in range(3))
    )
    assert {text_of(events) for events in runs} == {"echo: q0", "echo: q1", "echo: q2"}
    (session_id,) = {finished(events).result["sessionId"] for events in runs}
    sessions = (await user.request("GET", "/sessions")).json()
    assert [s["id"] for s in sessions] == [session_id]
    assert len(await user.messages(session_id)) == 6


async def test_a_tool_calling_turn_streams_the_call_and_its_result(
    user: Api, llm: LLMServerThread
) -> None:
    body = {"name": f"demo-{uuid.uuid4().hex[:6]}", "transport": "stdio",
            "command": sys.executable, "args": [DEMO]}  # fmt: skip
    server = (await user.request("POST", "/mcp/servers", json=body)).json()
    assert (await user.request("POST", f"/mcp/servers/{server['id']}/connect")).status_code == 200
    agent = await user.create_agent(mcp_servers=[server["id"]])
    add = tool_name(server["name"], "add")
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"tool_calls": [{"id": "call_add", "name": add, "arguments": {"a": 2, "b": 40}}]},
            "The answer is 42.",
        ],
    )

    events = await run(user, agent["id"], run_input(marker, [said("user", f"2 + 40? {marker}")]))

    (start,) = of(events, ToolCallStartEvent)
    assert (start.tool_call_id, start.tool_call_name) == ("call_add", add)
    args = "".join(e.delta for e in of(events, ToolCallArgsEvent))
    assert json.loads(args) == {"a": 2, "b": 40}
    (result,) = of(events, ToolCallResultEvent)
    assert result.tool_call_id == "call_add" and result.content == "42.0"
    kinds = [e.type for e in events]
    order = [EventType.TOOL_CALL_START, EventType.TOOL_CALL_ARGS, EventType.TOOL_CALL_END,
             EventType.TOOL_CALL_RESULT]  # fmt: skip
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    assert kinds.index(EventType.TOOL_CALL_RESULT) < kinds.index(EventType.TEXT_MESSAGE_START)
    assert text_of(events) == "The answer is 42."
    assert finished(events).result["content"] == "The answer is 42."


async def test_a_human_request_interrupts_the_run_and_resume_answers_it(user: Api) -> None:
    chain = [{"type": "AG_CALL_HUMAN", "prompt": "Which city?", "timeout_seconds": 600},
             "AG_SELF_GEN"]  # fmt: skip
    agent = await user.create_agent(chain=chain)
    thread = f"thread-{uuid.uuid4().hex}"
    messages = [said("user", "book me a trip")]

    first = await run(user, agent["id"], run_input(thread, messages))
    outcome = finished(first).outcome
    assert isinstance(outcome, RunFinishedInterruptOutcome)
    (asked,) = outcome.interrupts
    assert asked.message == "Which city?" and asked.expires_at
    session_id = finished(first).result["sessionId"]
    assert of(first, StateSnapshotEvent)[-1].snapshot["pending_human_request"] == asked.id

    resume = [{"interruptId": asked.id, "status": "resolved", "payload": "Paris"}]
    second = await run(user, agent["id"], run_input(thread, messages, resume=resume))
    done = finished(second)
    assert done.outcome is None and done.result["sessionId"] == session_id
    assert done.result["turnId"] == finished(first).result["turnId"]
    assert text_of(second) == done.result["content"] == "echo: Paris"

    # the interrupt is answered: resuming it again is a conflict, and nothing is stored
    again = run_input(thread, messages, resume=resume)
    r = await user.request("POST", path(agent["id"]), json=again)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    stored = await user.messages(session_id)
    assert [(m["role"], m["content"]) for m in reversed(stored)] == [
        ("user", "book me a trip"),
        ("user", "Paris"),
        ("assistant", "echo: Paris"),
    ]


async def test_another_users_agent_is_404_and_bad_input_is_422(user: Api, other_user: Api) -> None:
    theirs = await other_user.create_agent()
    mine = await user.create_agent()
    good = run_input("t-1", [said("user", "hi")])

    r = await user.request("POST", path(theirs["id"]), json=good)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert (await user.request("POST", "/agents/nope/ag-ui", json=good)).status_code == 404

    bad_bodies = [
        {k: v for k, v in good.items() if k != "threadId"},
        {**good, "messages": "hi"},
        {**good, "messages": [{"id": "1", "role": "wizard", "content": "hi"}]},
        {**good, "messages": []},
        {**good, "messages": [said("user", "hi"), said("assistant", "hello")]},
        {**good, "messages": [said("user", "   ")]},
        {**good, "threadId": "x" * 300},
        {**good, "resume": [{"interruptId": "1-1", "status": "maybe"}]},
        {**good, "resume": [{"interruptId": "1-1", "status": "resolved"}]},
    ]
    for bad in bad_bodies:
        r = await user.request("POST", path(mine["id"]), json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == PROBLEM and "Traceback" not in r.text
    json_type = {"Content-Type": "application/json"}
    r = await user.request("POST", path(mine["id"]), content=b"{not json", headers=json_type)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert (await user.request("GET", "/sessions")).json() == []  # nothing stored

    r = await user.client.post(url(mine["id"]), json=good)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM


async def test_an_api_key_needs_the_chat_scope(user: Api) -> None:
    agent = await user.create_agent()
    keys = {}
    for scopes in (["agents"], ["chat"]):
        r = await user.request("POST", "/api-keys", json={"name": "k", "scopes": scopes})
        assert r.status_code == 201, r.text
        keys[scopes[0]] = r.json()["key"]
    body = run_input(f"t-{uuid.uuid4().hex}", [said("user", "with a key")])
    headers = {"Authorization": f"Bearer {keys['agents']}"}
    r = await user.client.post(url(agent["id"]), json=body, headers=headers)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    keyed = Api(user.client, keys["chat"], user.user_id)
    assert text_of(await run(keyed, agent["id"], body)) == "echo: with a key"


async def test_a_client_that_goes_away_mid_stream_cancels_nothing(
    user: Api, llm: LLMServerThread
) -> None:
    agent = await user.create_agent()
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": [f"w{i} " for i in range(10)], "chunk_delay_ms": 100}])
    body = run_input(f"t-{marker}", [said("user", f"slow {marker}")])
    headers = {**user.headers, "Accept": "text/event-stream"}
    async with aconnect_sse(user.client, "POST", url(agent["id"]), json=body, headers=headers) as s:
        async for sse in s.aiter_sse():
            if sse.data and EVENT.validate_json(sse.data).type == EventType.TEXT_MESSAGE_CONTENT:
                break  # leave with the reply half-streamed

    # the same run again: the turn went on without a client and is not run twice
    again = await run(user, agent["id"], {**body, "runId": uuid.uuid4().hex})
    whole = "".join(f"w{i} " for i in range(10))
    assert finished(again).result["content"] == whole
    assert apply([], again)[-1].content == whole
    session_id = finished(again).result["sessionId"]
    stored = [m["content"] for m in await user.messages(session_id)]
    assert stored == [whole, f"slow {marker}"]
    assert len([r for r in llm.llm.requests if r["script"] == marker]) == 1


async def test_a_worker_killed_mid_turn_still_gives_one_complete_answer(
    isolated_stacks: Callable[[dict[str, str]], Stack], llm: LLMServerThread
) -> None:
    stack, first_worker, marker = killable_turn(isolated_stacks, llm)
    async with httpx.AsyncClient(base_url=stack.base, timeout=60) as client:
        user = await Api.register(client)
        agent = await user.create_agent()
        thread = [said("user", f"tell me {marker}")]
        body = run_input(f"t-{marker}", thread)

        async def kill_once(event: BaseEvent) -> None:
            if isinstance(event, TextMessageContentEvent) and event.delta == "part2 ":
                first_worker.kill()
                stack.start_worker()

        events = await asyncio.wait_for(run(user, agent["id"], body, kill_once), 120)

        assert not of(events, RunErrorEvent)
        assert of(events, MessagesSnapshotEvent), "the partial reply was not taken back"
        held = apply([], events)
        replies = [m for m in held if m.role == "assistant"]
        assert [m.content for m in replies] == [WHOLE_ANSWER]
        assert finished(events).result["content"] == WHOLE_ANSWER
        stored = await user.messages(finished(events).result["sessionId"])
        assert [m["content"] for m in stored if m["role"] == "assistant"] == [WHOLE_ANSWER]


# -- the npm reference client -------------------------------------------------------------------


@pytest.fixture(scope="session")
def agui_client_modules() -> Path:
    """`@ag-ui/client`, installed once into `.cache/npm-agui`."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm are not installed: the AG-UI reference client cannot run")
    package, version = AGUI_CLIENT
    manifest = NPM_CACHE / "node_modules" / package / "package.json"
    if not (manifest.exists() and json.loads(manifest.read_text())["version"] == version):
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["npm", "install", "--prefix", str(NPM_CACHE), "--no-audit", "--no-fund",
                 f"{package}@{version}"],
                capture_output=True, text=True, timeout=240,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {package} timed out (offline?)")
        if done.returncode != 0 or not manifest.exists():
            pytest.skip(f"npm install {package} failed (offline?): {done.stderr[-500:]}")
    return NPM_CACHE / "node_modules"


async def test_the_reference_client_holds_one_thread_across_runs_and_an_interrupt(
    user: Api, stack: Stack, agui_client_modules: Path
) -> None:
    chain = [{"type": "AG_CALL_HUMAN", "prompt": "Sure?", "timeout_seconds": 600},
             "AG_SELF_GEN"]  # fmt: skip
    agent = await user.create_agent(chain=chain)
    thread = f"npm-{uuid.uuid4().hex}"
    script = REPO / "tests" / "agui_client.mjs"
    endpoint = stack.base + url(agent["id"])
    argv = ["node", str(script), str(agui_client_modules), endpoint, user.token, thread,
            "yes", "first", "second"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    held = json.loads(out)

    assert held["interrupts"] == ["Sure?", "Sure?"]
    said_by = [(m["role"], m.get("content")) for m in held["messages"]]
    assert said_by == [
        ("user", "first"), ("assistant", "echo: yes"),
        ("user", "second"), ("assistant", "echo: yes"),
    ]  # fmt: skip
    sessions = (await user.request("GET", "/sessions")).json()
    (session,) = [s for s in sessions if s["agent_id"] == agent["id"]]
    stored = [(m["role"], m["content"]) for m in reversed(await user.messages(session["id"]))]
    assert stored == [
        ("user", "first"), ("user", "yes"), ("assistant", "echo: yes"),
        ("user", "second"), ("user", "yes"), ("assistant", "echo: yes"),
    ]  # fmt: skip
