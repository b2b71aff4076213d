"""A2A through the real a2a-sdk client (and raw 0.3 JSON-RPC), against real API and worker
processes and the scripted LLM: the agent card, send, stream, get, cancel, input-required, the
0.3 method names, bad input, and a worker killed mid-turn."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, create_client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from httpx_sse import aconnect_sse

from chatee.devtools.llm_server import LLMServerThread
from tests.support import WHOLE_ANSWER, Api, Stack, killable_turn

MakeStack = Callable[[dict[str, str]], Stack]
HUMAN_CHAIN = [{"type": "AG_CALL_HUMAN", "prompt": "OK to book?"}, "AG_SELF_GEN"]


def agent_url(base: str, agent: dict) -> str:
    return f"{base}/a2a/agents/{agent['id']}"


@pytest.fixture
async def agent(user: Api) -> dict:
    return await user.create_agent(name=f"a2a-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def bearer(user: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=user.headers, timeout=60) as made:
        yield made


async def connect(base: str, agent: dict, http: httpx.AsyncClient, streaming: bool) -> Client:
    """The official client, from the agent's card (fetched with the caller's bearer)."""
    return await create_client(
        agent_url(base, agent), ClientConfig(httpx_client=http, streaming=streaming)
    )


def ask(text: str, context_id: str = "", task_id: str = "") -> SendMessageRequest:
    message = Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        context_id=context_id,
        task_id=task_id,
    )
    return SendMessageRequest(message=message)


async def send(client: Client, request: SendMessageRequest) -> Task:
    """A non-streaming send: the one response is the task."""
    (response,) = [r async for r in client.send_message(request)]
    assert response.HasField("task"), response
    return response.task


def answer_of(events: list[StreamResponse]) -> str:
    """The answer artifact as a client assembles it from the stream (append or replace)."""
    text = ""
    for event in events:
        if event.HasField("artifact_update"):
            piece = "".join(p.text for p in event.artifact_update.artifact.parts)
            text = text + piece if event.artifact_update.append else piece
    return text


def states(events: list[StreamResponse]) -> list[int]:
    return [e.status_update.status.state for e in events if e.HasField("status_update")]


async def poll(client: Client, task_id: str) -> Task:
    """GetTask until the task ends or needs input."""
    for _ in range(600):
        task = await client.get_task(GetTaskRequest(id=task_id))
        if task.status.state not in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING):
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} is still {task.status.state}")


def artifact_text(task: Task) -> str:
    assert len(task.artifacts) == 1, task
    return "".join(p.text for p in task.artifacts[0].parts)


async def test_the_card_names_the_endpoint_versions_and_auth(
    stack: Stack, user: Api, other_user: Api, agent: dict, bearer: httpx.AsyncClient
) -> None:
    card_path = "/.well-known/agent-card.json"
    card = await A2ACardResolver(bearer, agent_url(stack.base, agent)).get_agent_card()
    assert card.name == agent["name"]
    assert card.capabilities.streaming
    assert {(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces} == {
        (agent_url(stack.base, agent), "JSONRPC", "1.0"),
        (agent_url(stack.base, agent), "JSONRPC", "0.3"),
    }
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
    assert "bearer" in card.security_requirements[0].schemes

    url = agent_url(stack.base, agent) + card_path
    raw = (await bearer.get(url)).json()
    assert raw["url"] == agent_url(stack.base, agent)  # the 0.3 fields too, for older clients
    assert raw["protocolVersion"] == "0.3"

    async with httpx.AsyncClient(timeout=30) as anonymous:
        r = await anonymous.get(url)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await anonymous.get(url, headers=other_user.headers)
        assert r.status_code == 404  # another user's agent is as missing as none
        r = await anonymous.post(agent_url(stack.base, agent), headers=other_user.headers, json={})
        assert r.status_code == 404

        keys = {}
        for scopes in (["agents"], ["chat"]):
            r = await user.request("POST", "/api-keys", json={"name": scopes[0], "scopes": scopes})
            keys[scopes[0]] = {"Authorization": f"Bearer {r.json()['key']}"}
        assert (await anonymous.get(url, headers=keys["agents"])).status_code == 403
        assert (await anonymous.get(url, headers=keys["chat"])).status_code == 200


async def test_send_opens_a_context_and_a_later_message_continues_it(
    stack: Stack, user: Api, agent: dict, bearer: httpx.AsyncClient, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, ["Ahoy there", "Still here"])
    client = await connect(stack.base, agent, bearer, streaming=False)
    first = await send(client, ask(f"hi {marker}"))
    assert first.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(first) == "Ahoy there"
    assert first.context_id and first.id

    follow_up = ask(f"again {marker}", context_id=first.context_id)
    second = await send(client, follow_up)
    assert second.status.state == TaskState.TASK_STATE_COMPLETED
    assert second.context_id == first.context_id and second.id != first.id
    assert artifact_text(second) == "Still here"
    stored = [m["content"] for m in reversed(await user.messages(first.context_id))]
    assert stored == [f"hi {marker}", "Ahoy there", f"again {marker}", "Still here"]

    got = await client.get_task(GetTaskRequest(id=first.id))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(got) == "Ahoy there"
    assert [m.parts[0].text for m in got.history] == [f"hi {marker}"]
    short = await client.get_task(GetTaskRequest(id=first.id, history_length=0))
    assert not short.history

    again = await send(client, follow_up)  # a client retrying: the same task, no new turn
    assert again.id == second.id and artifact_text(again) == "Still here"
    assert len(await user.messages(first.context_id)) == 4

    other = await send(client, ask("a fresh start"))  # no contextId: a session of its own
    assert other.context_id != first.context_id
    assert artifact_text(other) == "echo: a fresh start"

    with pytest.raises(UnsupportedOperationError):  # a completed task takes no more input
        await send(client, ask("more?", context_id=first.context_id, task_id=first.id))


async def test_a_stream_shows_the_answer_growing_then_completed(
    stack: Stack, agent: dict, bearer: httpx.AsyncClient, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["Once ", "upon ", "a time"]}])
    client = await connect(stack.base, agent, bearer, streaming=True)
    events = [e async for e in client.send_message(ask(f"story {marker}"))]
    assert events[0].HasField("task")
    task = events[0].task
    assert task.status.state == TaskState.TASK_STATE_SUBMITTED
    assert states(events) == [TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED]
    pieces = [e for e in events if e.HasField("artifact_update")]
    assert len(pieces) >= 3 and pieces[-1].artifact_update.last_chunk
    assert answer_of(events) == "Once upon a time"

    got = await client.get_task(GetTaskRequest(id=task.id))
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(got) == "Once upon a time"


async def test_a_dropped_stream_is_picked_up_again_with_subscribe(
    stack: Stack, agent: dict, bearer: httpx.AsyncClient, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    words = [f"w{i} " for i in range(20)]
    llm.llm.script(marker, [{"chunks": words, "chunk_delay_ms": 150}])
    client = await connect(stack.base, agent, bearer, streaming=True)
    async for event in client.send_message(ask(f"count {marker}")):
        if event.HasField("task"):
            task_id = event.task.id
        if event.HasField("artifact_update"):
            break  # the client drops the stream after the first piece

    events = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]
    assert events[0].task.id == task_id
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    assert answer_of(events) == "".join(words)
    with pytest.raises(UnsupportedOperationError):  # nothing left to follow
        _ = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]


async def test_cancel_stops_a_running_task(
    stack: Stack, agent: dict, bearer: httpx.AsyncClient, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": [f"w{i} " for i in range(100)], "chunk_delay_ms": 100}])
    client = await connect(stack.base, agent, bearer, streaming=True)
    events: list[StreamResponse] = []
    async for event in client.send_message(ask(f"long {marker}")):
        events.append(event)
        if event.HasField("artifact_update"):
            break
    task_id = events[0].task.id
    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    got = await client.get_task(GetTaskRequest(id=task_id))
    assert got.status.state == TaskState.TASK_STATE_CANCELED and not got.artifacts
    assert got.status.message.parts[0].text == "the turn was cancelled"
    with pytest.raises(TaskNotCancelableError):
        await client.cancel_task(CancelTaskRequest(id=task_id))


async def test_input_required_then_the_reply_on_the_same_task_completes_it(
    stack: Stack, user: Api, bearer: httpx.AsyncClient, llm: LLMServerThread
) -> None:
    agent = await user.create_agent(name=f"booker-{uuid.uuid4().hex[:6]}", chain=HUMAN_CHAIN)
    marker = uuid.uuid4().hex  # the model runs after the reply: the last user message is that
    llm.llm.script(marker, ["Booked: seat 12A"])
    client = await connect(stack.base, agent, bearer, streaming=False)
    task = await send(client, ask("book the train"))
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert task.status.message.parts[0].text == "OK to book?"
    assert task.status.message.role == Role.ROLE_AGENT

    got = await client.get_task(GetTaskRequest(id=task.id))  # durable: read back, not cached
    assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert got.status.message.parts[0].text == "OK to book?"

    streaming = await connect(stack.base, agent, bearer, streaming=True)
    (waiting,) = [e async for e in streaming.subscribe(SubscribeToTaskRequest(id=task.id))]
    assert waiting.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    reply = ask(f"yes, book it {marker}", context_id=task.context_id, task_id=task.id)
    events = [e async for e in streaming.send_message(reply)]
    assert events[0].task.id == task.id
    assert events[0].task.status.state == TaskState.TASK_STATE_WORKING
    assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
    assert answer_of(events) == "Booked: seat 12A"

    done = await client.get_task(GetTaskRequest(id=task.id))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert artifact_text(done) == "Booked: seat 12A"
    assert [m.parts[0].text for m in done.history] == ["book the train", f"yes, book it {marker}"]


async def test_the_03_method_names_answer_older_clients(
    stack: Stack, agent: dict, bearer: httpx.AsyncClient
) -> None:
    url = agent_url(stack.base, agent)
    message = {
        "role": "user",
        "parts": [{"kind": "text", "text": "hello from 0.3"}],
        "messageId": str(uuid.uuid4()),
        "kind": "message",
    }
    r = await bearer.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}},
    )
    assert r.status_code == 200, r.text
    task = r.json()["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"][0] == {"kind": "text", "text": "echo: hello from 0.3"}

    r = await bearer.post(
        url,
        json={"jsonrpc": "2.0", "id": "g", "method": "tasks/get", "params": {"id": task["id"]}},
    )
    got = r.json()["result"]
    assert got["id"] == task["id"] and got["contextId"] == task["contextId"]
    assert got["status"]["state"] == "completed"
    r = await bearer.post(
        url,
        json={"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel", "params": {"id": task["id"]}},
    )
    assert r.json()["error"]["code"] == -32002  # not cancelable: it is done

    streamed = {"jsonrpc": "2.0", "id": 4, "method": "message/stream"}
    streamed["params"] = {"message": {**message, "messageId": str(uuid.uuid4())}}
    results = []
    async with aconnect_sse(bearer, "POST", url, json=streamed) as source:
        async for sse in source.aiter_sse():
            results.append(json.loads(sse.data)["result"])
    assert [r["kind"] for r in results][:2] == ["task", "status-update"]
    assert results[-1]["kind"] == "status-update" and results[-1]["final"] is True
    assert results[-1]["status"]["state"] == "completed"
    pieces = [r["artifact"]["parts"][0]["text"] for r in results if r["kind"] == "artifact-update"]
    text = "".join(pieces)
    assert text == "echo: hello from 0.3"


async def test_bad_requests_get_clear_errors_and_store_nothing(
    stack: Stack, user: Api, agent: dict, bearer: httpx.AsyncClient
) -> None:
    url = agent_url(stack.base, agent)
    v1 = {"A2A-Version": "1.0"}

    async def rpc(body: object, **kw: object) -> dict:
        r = await bearer.post(url, headers=v1, **kw) if kw else await bearer.post(url, json=body)
        assert r.status_code == 200, r.text
        return r.json()["error"]

    assert (await rpc(None, content=b"{not json"))["code"] == -32700
    assert (await rpc({"id": 1, "method": "SendMessage"}))["code"] == -32600  # no "jsonrpc"
    assert (await rpc({"jsonrpc": "2.0", "id": 1, "method": "Nope", "params": {}}))[
        "code"
    ] == -32601
    message = {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]}
    sent = {"jsonrpc": "2.0", "id": 2, "method": "SendMessage", "params": {"message": message}}
    r = await bearer.post(url, json=sent)  # a 1.0 method without the 1.0 header
    assert r.json()["error"]["code"] == -32009
    bad = {**sent, "params": {"message": {**message, "parts": "x"}}}
    assert (await rpc(None, json=bad))["code"] == -32602
    blank = {**sent, "params": {"message": {**message, "parts": [{"text": "  "}]}}}
    assert (await rpc(None, json=blank))["code"] == -32602
    raw = [{"raw": "aGk=", "mediaType": "image/png"}]
    file = {**sent, "params": {"message": {**message, "parts": raw}}}
    assert (await rpc(None, json=file))["code"] == -32005
    foreign = {**sent, "params": {"message": {**message, "contextId": "123"}}}
    assert (await rpc(None, json=foreign))["code"] == -32602
    big = {**sent, "params": {"message": {**message, "parts": [{"text": "x" * 5_000_000}]}}}
    r = await bearer.post(url, headers=v1, json=big)
    assert r.status_code == 413

    client = await connect(stack.base, agent, bearer, streaming=False)
    for task_id in ("42", "not-a-task"):
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await client.cancel_task(CancelTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await send(client, ask("answer", task_id=task_id))
    sessions = await user.request("GET", "/sessions")
    assert sessions.json() == []  # none of it stored anything


async def test_another_users_task_is_not_found(
    stack: Stack, user: Api, other_user: Api, bearer: httpx.AsyncClient
) -> None:
    mine = await user.create_agent(name=f"mine-{uuid.uuid4().hex[:6]}")
    client = await connect(stack.base, mine, bearer, streaming=False)
    task = await send(client, ask("secret"))
    theirs = await other_user.create_agent(name=f"theirs-{uuid.uuid4().hex[:6]}")
    async with httpx.AsyncClient(headers=other_user.headers, timeout=60) as http:
        other = await connect(stack.base, theirs, http, streaming=False)
        with pytest.raises(TaskNotFoundError):
            await other.get_task(GetTaskRequest(id=task.id))
        with pytest.raises(A2AClientError):  # and not even its agent's card
            await connect(stack.base, mine, http, streaming=False)


async def test_a_worker_killed_mid_turn_still_gives_one_complete_answer(
    isolated_stacks: MakeStack, llm: LLMServerThread
) -> None:
    stack, first_worker, marker = killable_turn(isolated_stacks, llm)
    async with (
        httpx.AsyncClient(base_url=stack.base, timeout=60) as plain,
        httpx.AsyncClient(timeout=120) as http,
    ):
        user = await Api.register(plain)
        agent = await user.create_agent(name="survivor")
        http.headers.update(user.headers)
        client = await connect(stack.base, agent, http, streaming=True)
        events: list[StreamResponse] = []
        midway = asyncio.Event()

        async def listen() -> None:
            async for event in client.send_message(ask(f"go {marker}")):
                events.append(event)
                if "part2" in answer_of(events):
                    midway.set()

        listening = asyncio.create_task(listen())
        await asyncio.wait_for(midway.wait(), 60)
        first_worker.kill()
        stack.start_worker()
        await asyncio.wait_for(listening, 120)

        assert answer_of(events) == WHOLE_ANSWER
        assert states(events).count(TaskState.TASK_STATE_COMPLETED) == 1
        assert states(events)[-1] == TaskState.TASK_STATE_COMPLETED
        got = await client.get_task(GetTaskRequest(id=events[0].task.id))
        assert artifact_text(got) == WHOLE_ANSWER
        replies = [m for m in await user.messages(got.context_id) if m["role"] == "assistant"]
        assert [m["content"] for m in replies] == [WHOLE_ANSWER]


async def test_a_waiting_task_outlives_an_api_restart(
    isolated_stacks: MakeStack, llm: LLMServerThread
) -> None:
    stack = isolated_stacks({})
    stack.start_worker()
    api = stack.start_api()
    marker = uuid.uuid4().hex
    llm.llm.script(marker, ["Booked after the restart"])
    async with (
        httpx.AsyncClient(base_url=stack.base, timeout=60) as plain,
        httpx.AsyncClient(timeout=60) as http,
    ):
        user = await Api.register(plain)
        agent = await user.create_agent(name="booker", chain=HUMAN_CHAIN)
        http.headers.update(user.headers)
        client = await connect(stack.base, agent, http, streaming=False)
        request = ask("book the ferry")
        request.configuration.return_immediately = True  # a polling client
        submitted = await send(client, request)
        assert submitted.status.state == TaskState.TASK_STATE_SUBMITTED
        task = await poll(client, submitted.id)
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED

        api.kill()  # nothing about the task lives in the API process
        stack.start_api()
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert got.status.message.parts[0].text == "OK to book?"
        reply = ask(f"yes {marker}", context_id=task.context_id, task_id=task.id)
        done = await send(client, reply)
        assert done.id == task.id and done.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_text(done) == "Booked after the restart"
