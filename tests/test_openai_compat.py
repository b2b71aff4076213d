"""The OpenAI-compatible API (/v1) through the real `openai` SDK, against real API and worker
processes and the scripted LLM: models, completions (whole and streamed), session continuity,
and errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import openai
import pytest

from chatee.client import Agent, Client, MessageDelta, TurnEvent
from chatee.devtools.llm_server import LLMServerThread
from tests.support import (
    WHOLE_ANSWER,
    Stack,
    access_token,
    follow_until,
    killable_turn,
    new_agent,
    new_session,
    signed_up,
    stored_messages,
)

SESSION = "X-Chatee-Session-Id"
LIMITS = {
    "CHATEE_SECURITY__RATE_WINDOW_SECONDS": "30",
    "CHATEE_SECURITY__IP_REQUESTS_PER_WINDOW": "15",
    "CHATEE_SECURITY__USER_WRITES_PER_WINDOW": "3",
    "CHATEE_LIMITS__MAX_MESSAGE_BYTES": "64",
}


@pytest.fixture
async def client(stack: Stack, chatee: Client) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base}/v1", api_key=access_token(chatee), max_retries=0
    ) as made:
        yield made


@pytest.fixture
async def agent(chatee: Client) -> Agent:
    return await new_agent(chatee, name=f"helper-{uuid.uuid4().hex[:8]}")


async def complete(client: openai.AsyncOpenAI, model: str, messages: list[dict], **kw):
    """A non-streaming completion and the session it ran in."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages, **kw
    )
    return raw.parse(), raw.headers[SESSION]


async def test_models_are_the_callers_agents(
    client: openai.AsyncOpenAI, chatee: Client, other_chatee: Client
) -> None:
    mine = [await new_agent(chatee, name=f"a-{uuid.uuid4().hex[:6]}") for _ in range(2)]
    await new_agent(other_chatee, name="not-yours")
    models = [m async for m in client.models.list()]
    assert sorted(m.id for m in models) == sorted(a.name for a in mine)
    assert all(m.object == "model" for m in models)


async def test_a_completion_is_the_agents_reply_with_usage(
    client: openai.AsyncOpenAI, agent: Agent, chatee: Client, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["Ahoy", ", matey"], "usage": {"prompt_tokens": 7}}])
    completion, session_id = await complete(
        client, agent.name, [{"role": "user", "content": f"hi {marker}"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Ahoy, matey"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == 7 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    stored = await stored_messages(chatee, session_id)  # the turn ran in a durable session
    assert [m.content for m in reversed(stored)] == [f"hi {marker}", "Ahoy, matey"]

    by_id, _ = await complete(client, agent.id, [{"role": "user", "content": "by id"}])
    assert by_id.choices[0].message.content == "echo: by id"


async def test_a_stream_assembles_to_the_reply_and_ends_with_usage(
    client: openai.AsyncOpenAI, agent: Agent, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["one ", "two ", "three"], "usage": {"prompt_tokens": 5}}])
    raw = await client.chat.completions.with_raw_response.create(
        model=agent.name,
        messages=[{"role": "user", "content": f"count {marker}"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers[SESSION].isdigit()
    chunks = [c async for c in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 5
    assert chunks[-1].usage.total_tokens == 5 + chunks[-1].usage.completion_tokens

    plain = await client.chat.completions.create(
        model=agent.name, messages=[{"role": "user", "content": "no usage"}], stream=True
    )
    chunks = [c async for c in plain]
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: no usage"


async def test_a_retried_step_streams_its_text_once(
    client: openai.AsyncOpenAI, agent: Agent, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    chunks = ["part1 ", "part2 ", "part3"]
    llm.llm.script(marker, [{"chunks": chunks, "drop_after_chunks": 2}, {"chunks": chunks}])
    stream = await client.chat.completions.create(
        model=agent.name, messages=[{"role": "user", "content": marker}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "part1 part2 part3"


async def test_sessions_continue_by_history_header_and_metadata(
    client: openai.AsyncOpenAI, agent: Agent, chatee: Client
) -> None:
    model, tag = agent.name, uuid.uuid4().hex
    first = [{"role": "system", "content": "ignored"}, {"role": "user", "content": f"a {tag}"}]
    reply, session = await complete(client, model, first)
    assert reply.choices[0].message.content == f"echo: a {tag}"

    # the client repeats the conversation so far: the same session continues
    again = [*first, {"role": "assistant", "content": f"echo: a {tag}"}]
    _, same = await complete(client, model, [*again, {"role": "user", "content": f"b {tag}"}])
    assert same == session
    # a fresh conversation (or one whose history matches no session) opens a new session
    _, fresh = await complete(client, model, [{"role": "user", "content": f"a {tag}"}])
    _, forked = await complete(
        client, model, [*again[1:-1], {"role": "assistant", "content": "other"}, first[1]]
    )
    assert len({session, fresh, forked}) == 3

    # named: the header, or metadata.session_id; the header wins
    _, by_header = await complete(
        client, model, [{"role": "user", "content": "c"}], extra_headers={SESSION: session}
    )
    _, by_metadata = await complete(
        client, model, [{"role": "user", "content": "d"}], metadata={"session_id": session}
    )
    _, both = await complete(
        client,
        model,
        [{"role": "user", "content": "e"}],
        extra_headers={SESSION: session},
        metadata={"session_id": fresh},
    )
    assert by_header == by_metadata == both == session
    stored = list(reversed(await stored_messages(chatee, session)))
    said = [m.content for m in stored if m.role == "user"]
    assert said == [f"a {tag}", f"b {tag}", "c", "d", "e"]
    # the whole exchange, repeated, still finds it
    history = [{"role": m.role, "content": m.content} for m in stored]
    _, found = await complete(client, model, [*history, {"role": "user", "content": "f"}])
    assert found == session


async def test_a_client_that_leaves_mid_stream_does_not_stop_the_turn(
    client: openai.AsyncOpenAI, agent: Agent, chatee: Client, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    words = [f"w{i} " for i in range(10)]
    llm.llm.script(marker, [{"chunks": words, "chunk_delay_ms": 100}])
    raw = await client.chat.completions.with_raw_response.create(
        model=agent.name, messages=[{"role": "user", "content": marker}], stream=True
    )
    session_id = raw.headers[SESSION]
    stream = raw.parse()
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    for _ in range(100):
        stored = await stored_messages(chatee, session_id)
        if any(m.role == "assistant" for m in stored):
            break
        await asyncio.sleep(0.1)
    assert stored[0].role == "assistant" and stored[0].content == "".join(words)


async def test_responses_run_turns_and_continue_sessions(
    client: openai.AsyncOpenAI, agent: Agent, chatee: Client, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["Hel", "lo"], "usage": {"prompt_tokens": 3}}])
    raw = await client.responses.with_raw_response.create(model=agent.name, input=marker)
    first = raw.parse()
    session_id = raw.headers[SESSION]
    assert first.status == "completed" and first.output_text == "Hello"
    assert first.usage.input_tokens == 3 and first.usage.total_tokens > 3

    stream = await client.responses.create(
        model=agent.name, input="streamed", previous_response_id=first.id, stream=True
    )
    events = [e async for e in stream]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text == "echo: streamed"
    second = events[-1].response

    async with client.responses.stream(
        model=agent.name,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "helper"}]}],
        previous_response_id=second.id,
    ) as helper:
        third = await helper.get_final_response()
    assert third.output_text == "echo: helper"

    got = await client.responses.retrieve(second.id)
    assert got.id == second.id and got.status == "completed"
    assert got.output_text == "echo: streamed" and got.model == agent.name
    stored = [m.content for m in reversed(await stored_messages(chatee, session_id))]
    assert stored == [marker, "Hello", "streamed", "echo: streamed", "helper", "echo: helper"]

    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve("resp_1_2")
    with pytest.raises(openai.NotFoundError) as exc:
        await client.responses.create(model=agent.name, input="x", previous_response_id="resp_nope")
    assert exc.value.param == "previous_response_id"


async def test_errors_come_in_openais_shape(
    stack: Stack, client: openai.AsyncOpenAI, agent: Agent, other_chatee: Client
) -> None:
    hello = [{"role": "user", "content": "hello"}]
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base}/v1", api_key="not-a-token", max_retries=0
    ) as stranger:
        with pytest.raises(openai.AuthenticationError) as exc:
            await stranger.chat.completions.create(model=agent.name, messages=hello)
        assert exc.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()

    with pytest.raises(openai.NotFoundError) as exc:
        await client.chat.completions.create(model="no-such-agent", messages=hello)
    assert exc.value.code == "model_not_found" and exc.value.param == "model"
    other = await new_agent(other_chatee, name="theirs")  # another user's agent: not found
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model=other.id, messages=hello)

    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(
            model=agent.name,
            messages=[{"role": "user", "content": [{"type": "text", "text": "see"}, image]}],
        )
    assert exc.value.code == "unsupported_content"
    assert exc.value.param == "messages[0].content[1]"
    with pytest.raises(openai.BadRequestError):  # the last message must be the user's
        await client.chat.completions.create(
            model=agent.name, messages=[{"role": "assistant", "content": "hi"}]
        )
    with pytest.raises(openai.NotFoundError):  # someone else's (or no) session
        await client.chat.completions.create(
            model=agent.name, messages=hello, extra_headers={SESSION: "12345"}
        )

    # FastAPI's own validation and unknown paths answer in OpenAI's shape too
    async with httpx.AsyncClient(base_url=stack.base, headers=auth(client.api_key)) as http:
        bad = await http.post("/v1/chat/completions", json={"model": agent.name})
        assert bad.status_code == 400, bad.text
        assert bad.headers["content-type"] == "application/json"
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert bad.json()["error"]["param"] == "messages"
        missing = await http.get("/v1/nothing-here")
        assert missing.status_code == 404 and "error" in missing.json()


async def test_an_api_key_needs_the_chat_scope(stack: Stack, chatee: Client, agent: Agent) -> None:
    keys = {}
    for scopes in (["agents"], ["chat"]):
        keys[scopes[0]] = (await chatee.create_api_key(scopes[0], scopes)).key
    hello = [{"role": "user", "content": "with a key"}]
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base}/v1", api_key=keys["agents"], max_retries=0
    ) as no_chat:
        with pytest.raises(openai.PermissionDeniedError):
            await no_chat.chat.completions.create(model=agent.name, messages=hello)
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base}/v1", api_key=keys["chat"], max_retries=0
    ) as chat:
        reply = await chat.chat.completions.create(model=agent.name, messages=hello)
        assert reply.choices[0].message.content == "echo: with a key"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_sync_client_works_too(stack: Stack, chatee: Client, agent: Agent) -> None:
    def run() -> tuple[str, str]:
        with openai.OpenAI(base_url=f"{stack.base}/v1", api_key=access_token(chatee)) as sync:
            whole = sync.chat.completions.create(
                model=agent.name, messages=[{"role": "user", "content": "sync"}]
            )
            streamed = sync.chat.completions.create(
                model=agent.name, messages=[{"role": "user", "content": "sync"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            return whole.choices[0].message.content or "", text

    assert await asyncio.to_thread(run) == ("echo: sync", "echo: sync")


@pytest.fixture(scope="module")
def tight(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API process with small budgets (the shared worker runs its turns)."""
    running = Stack(env={**stack_env, **LIMITS}, tmp=tmp_path_factory.mktemp("openai-limits"))
    running.start_api()
    yield running
    running.stop()


async def test_limits_answer_as_openai_does(tight: Stack) -> None:
    async with await signed_up(tight.base) as chatee:
        agent = await new_agent(chatee, name="limited")
        async with openai.AsyncOpenAI(
            base_url=f"{tight.base}/v1", api_key=access_token(chatee), max_retries=0
        ) as client:
            with pytest.raises(openai.APIStatusError) as exc:
                await client.chat.completions.create(
                    model=agent.name, messages=[{"role": "user", "content": "x" * 65}]
                )
            assert exc.value.status_code == 413
            assert exc.value.code == "message-too-large"
            with pytest.raises(openai.RateLimitError) as limited:
                for _ in range(5):  # each a write, refused or not
                    with contextlib.suppress(openai.NotFoundError):
                        await client.chat.completions.create(
                            model="missing", messages=[{"role": "user", "content": "hi"}]
                        )
            assert int(limited.value.response.headers["Retry-After"]) >= 1
            assert limited.value.code == "rate_limit_exceeded"


async def test_the_per_address_budget_covers_v1_in_openais_shape(tight: Stack) -> None:
    async with await signed_up(tight.base) as chatee:
        api_key = access_token(chatee)
    # uvicorn takes X-Forwarded-For from a local proxy: a client address of its own
    async with openai.AsyncOpenAI(
        base_url=f"{tight.base}/v1",
        api_key=api_key,
        max_retries=0,
        default_headers={"X-Forwarded-For": "198.18.9.9"},
    ) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            for _ in range(30):
                await client.models.list()
        assert limited.value.code == "rate_limit_exceeded"
        assert "this address" in limited.value.message


def part2(event: TurnEvent) -> bool:
    """The killable turn's third chunk: its worker dies after this one."""
    return isinstance(event, MessageDelta) and event.text == "part2 "


async def test_a_worker_killed_mid_turn_still_answers_once(
    isolated_stacks: Callable[[dict[str, str]], Stack], llm: LLMServerThread
) -> None:
    stack, first_worker, marker = killable_turn(isolated_stacks, llm)
    async with await signed_up(stack.base) as chatee:
        session = await new_session(chatee, name="durable")
        async with openai.AsyncOpenAI(
            base_url=f"{stack.base}/v1", api_key=access_token(chatee), max_retries=0, timeout=120
        ) as client:
            answer = asyncio.create_task(
                client.chat.completions.create(
                    model="durable",
                    messages=[{"role": "user", "content": marker}],
                    extra_headers={SESSION: session.id},
                )
            )
            await follow_until(chatee, session.id, part2)
            first_worker.kill()  # mid-turn: the retried step answers on the next worker
            stack.start_worker()
            completion = await asyncio.wait_for(answer, 90)
        assert completion.choices[0].message.content == WHOLE_ANSWER
        assert completion.choices[0].finish_reason == "stop"
        assistant = [m for m in await stored_messages(chatee, session.id) if m.role == "assistant"]
        assert [m.content for m in assistant] == [WHOLE_ANSWER]
