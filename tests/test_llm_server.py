"""The scripted LLM server, driven by the real ``openai`` client."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk

from chatee.devtools.llm_server import (
    EMBEDDING_DIMENSIONS,
    LLMServerThread,
    embed_text,
    split_words,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-secret"


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServerThread]:
    with LLMServerThread() as running:
        yield running


@pytest.fixture(scope="module")
def secured_server() -> Iterator[LLMServerThread]:
    with LLMServerThread(api_key=API_KEY) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_scripts(server: LLMServerThread) -> None:
    server.llm.reset()


@pytest.fixture
async def client(server: LLMServerThread) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key="anything", max_retries=0) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def collect(client: AsyncOpenAI, text: str, **kwargs: Any) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model="test", messages=user(text), stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_split_words_keeps_every_character() -> None:
    for text in ["", "one", "a b c d e f g", "  lead and  double  spaces ", "x\ny z w"]:
        assert "".join(split_words(text)) == text
    assert split_words("a b c d e f g") == ["a b c ", "d e f ", "g"]


async def test_default_echo_non_streaming(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="test", messages=user("hello there, general kenobi")
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: hello there, general kenobi"
    assert choice.finish_reason == "stop"
    assert completion.model == "test"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.total_tokens == 4 + completion.usage.completion_tokens


async def test_default_echo_streaming_with_usage(client: AsyncOpenAI) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    chunks = await collect(client, text, stream_options={"include_usage": True})

    assert chunks[0].choices[0].delta.role == "assistant"
    assert content_of(chunks) == f"echo: {text}"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 2
    choice_chunks = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in choice_chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == len(text.split())
    assert usage_chunk.usage.completion_tokens == len(content_chunks)
    assert usage_chunk.usage.total_tokens == len(text.split()) + len(content_chunks)


async def test_no_usage_chunk_unless_asked(client: AsyncOpenAI) -> None:
    chunks = await collect(client, "hi")
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert content_of(chunks) == "echo: hi"


async def test_scripted_responses_fifo_then_echo(
    server: LLMServerThread, client: AsyncOpenAI
) -> None:
    server.llm.script(
        "weather",
        [
            {"chunks": ["Sun", "ny ", "today"], "delay_ms": 100, "chunk_delay_ms": 40},
            "Rain tomorrow.",
        ],
    )
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="test", messages=user("what's the weather?"), stream=True
    )
    arrivals: list[float] = []
    chunks: list[ChatCompletionChunk] = []
    async for chunk in stream:
        arrivals.append(time.monotonic() - started)
        chunks.append(chunk)
    assert [c.choices[0].delta.content for c in chunks] == ["", "Sun", "ny ", "today"]
    assert arrivals[0] >= 0.09
    assert arrivals[-1] - arrivals[0] >= 3 * 0.04 - 0.01

    second = await client.chat.completions.create(model="test", messages=user("weather again"))
    assert second.choices[0].message.content == "Rain tomorrow."
    third = await client.chat.completions.create(model="test", messages=user("weather?"))
    assert third.choices[0].message.content == "echo: weather?"
    assert [r["script"] for r in server.llm.requests] == ["weather", "weather", None]


async def test_scripts_are_per_conversation(server: LLMServerThread, client: AsyncOpenAI) -> None:
    server.llm.script("alice", [{"text": "hi alice", "delay_ms": 50}, "bye alice"])
    server.llm.script("bob", ["hi bob", "bye bob"])

    async def conversation(name: str) -> list[str]:
        replies = []
        for _ in range(2):
            chunks = await collect(client, f"I am {name}", stream_options={"include_usage": True})
            replies.append(content_of(chunks))
        return replies

    alice, bob = await asyncio.gather(conversation("alice"), conversation("bob"))
    assert alice == ["hi alice", "bye alice"]
    assert bob == ["hi bob", "bye bob"]


async def test_script_matches_the_last_user_message(
    server: LLMServerThread, client: AsyncOpenAI
) -> None:
    server.llm.script("needle", ["found"])
    messages = [
        {"role": "user", "content": "a needle in the history"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "no match here"}]},
    ]
    completion = await client.chat.completions.create(model="test", messages=messages)
    assert completion.choices[0].message.content == "echo: no match here"
    completion = await client.chat.completions.create(model="test", messages=user("needle!"))
    assert completion.choices[0].message.content == "found"


async def test_tool_calls_stream_and_reassemble(
    server: LLMServerThread, client: AsyncOpenAI
) -> None:
    args = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}
    server.llm.script(
        "forecast",
        [
            {
                "text": "Let me check.",
                "tool_calls": [
                    {"name": "get_weather", "arguments": args},
                    {"id": "call_fixed", "name": "noop", "arguments": "{}"},
                ],
                "usage": {"prompt_tokens": 111, "completion_tokens": 7},
            }
        ],
    )
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}},
        }
    ]
    chunks = await collect(
        client, "forecast please", tools=tools, stream_options={"include_usage": True}
    )

    calls: dict[int, dict[str, str]] = {}
    argument_pieces = 0
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
                argument_pieces += bool(delta.function.arguments)
    assert content_of(chunks) == "Let me check."
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == args
    assert calls[1] == {"id": "call_fixed", "name": "noop", "arguments": "{}"}
    assert argument_pieces > 2  # the first call's arguments arrive split
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.total_tokens) == (111, 118)
    assert server.llm.requests[-1]["body"]["tools"] == tools


async def test_tool_calls_non_streaming(server: LLMServerThread, client: AsyncOpenAI) -> None:
    server.llm.script("lookup", [{"tool_calls": [{"name": "search", "arguments": {"q": "x"}}]}])
    completion = await client.chat.completions.create(model="test", messages=user("lookup x"))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    function = choice.message.tool_calls[0].function
    assert (function.name, json.loads(function.arguments)) == ("search", {"q": "x"})


async def test_json_response(server: LLMServerThread, client: AsyncOpenAI) -> None:
    payload = {"title": "Weekly sync", "tags": ["a", "b"], "score": 0.5}
    server.llm.script("summarise", [{"json": payload}, {"json": payload}])
    completion = await client.chat.completions.create(
        model="test", messages=user("summarise"), response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == payload
    assert json.loads(content_of(await collect(client, "summarise"))) == payload
    assert server.llm.requests[0]["body"]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_scripted_errors(
    server: LLMServerThread,
    client: AsyncOpenAI,
    status: int,
    exception: type[openai.APIStatusError],
    stream: bool,
) -> None:
    server.llm.script("boom", [{"error": {"status": status, "message": f"scripted {status}"}}])
    with pytest.raises(exception) as caught:
        await client.chat.completions.create(model="test", messages=user("boom"), stream=stream)
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == f"scripted {status}"
    assert {"type", "code"} <= caught.value.body.keys()


async def test_api_key_enforced(secured_server: LLMServerThread) -> None:
    async with AsyncOpenAI(base_url=secured_server.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            await bad.chat.completions.create(model="test", messages=user("hi"))
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await bad.embeddings.create(model="emb", input="hi")
    async with AsyncOpenAI(base_url=secured_server.base_url, api_key=API_KEY) as good:
        completion = await good.chat.completions.create(model="test", messages=user("hi"))
        assert completion.choices[0].message.content == "echo: hi"
        assert [m.id async for m in good.models.list()] == ["scripted-llm"]
    assert [r["has_authorization"] for r in secured_server.llm.requests] == [True, True]


@pytest.mark.parametrize("drop_after", [0, 2])
async def test_drop_after_chunks_breaks_the_stream(
    server: LLMServerThread, client: AsyncOpenAI, drop_after: int
) -> None:
    server.llm.script(
        "cut", [{"text": "one two three four five six seven", "drop_after_chunks": drop_after}]
    )
    stream = await client.chat.completions.create(model="test", messages=user("cut"), stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == drop_after


async def test_drop_non_streaming(server: LLMServerThread, client: AsyncOpenAI) -> None:
    server.llm.script("cut", [{"text": "partial", "drop_after_chunks": 0}])
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="test", messages=user("cut"))


async def test_embeddings_are_deterministic(client: AsyncOpenAI) -> None:
    texts = ["the cat sat on the mat", "The cat sat on the mat!", "stock prices fell"]
    first = await client.embeddings.create(model="emb", input=texts, encoding_format="float")
    again = await client.embeddings.create(model="emb", input=texts, encoding_format="float")
    vectors = [item.embedding for item in first.data]
    assert vectors == [item.embedding for item in again.data]
    assert [item.index for item in first.data] == [0, 1, 2]
    assert all(len(vector) == EMBEDDING_DIMENSIONS for vector in vectors)
    assert all(math.isclose(math.hypot(*vector), 1.0) for vector in vectors)
    assert vectors[0] == vectors[1] == embed_text(texts[0])
    assert vectors[0] != vectors[2]
    assert first.usage.prompt_tokens == 6 + 6 + 3

    single = await client.embeddings.create(model="emb", input="stock prices fell")
    assert single.data[0].embedding == pytest.approx(vectors[2], abs=1e-6)  # default base64


async def test_requests_are_recorded(server: LLMServerThread, client: AsyncOpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "hi"},
    ]
    await client.chat.completions.create(
        model="test", messages=messages, temperature=0.2, max_tokens=50
    )
    recorded = server.llm.requests
    assert len(recorded) == 1
    body = recorded[0]["body"]
    assert body["messages"] == messages
    assert (body["temperature"], body["max_tokens"]) == (0.2, 50)
    assert recorded[0]["has_authorization"] is True

    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/_requests")).json() == recorded


async def test_http_control_api(server: LLMServerThread, client: AsyncOpenAI) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/_script", json={"match": "ping", "responses": [{"text": "pong"}, "pong again"]}
        )
        assert response.status_code == 200
        bad = await http.post("/_script", json={"match": "x", "responses": [{"txet": "typo"}]})
        assert bad.status_code == 400

        reply = await client.chat.completions.create(model="test", messages=user("ping"))
        assert reply.choices[0].message.content == "pong"

        assert (await http.delete("/_script")).status_code == 200
        assert (await http.get("/_requests")).json() == []
        reply = await client.chat.completions.create(model="test", messages=user("ping"))
        assert reply.choices[0].message.content == "echo: ping"


async def test_subprocess_runner() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatee.devtools.llm_server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        API_KEY,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=15)).decode()
        assert line.startswith("LISTENING http://127.0.0.1:")
        url = line.split()[1]
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0) as c:
            chunks = [
                chunk
                async for chunk in await c.chat.completions.create(
                    model="test", messages=user("from a process"), stream=True
                )
            ]
            assert content_of(chunks) == "echo: from a process"
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert await asyncio.wait_for(process.wait(), timeout=10) in (0, -signal.SIGTERM)
        assert process.stderr is not None
        assert b"Traceback" not in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_chatee_devtools_llm_command() -> None:
    """`chatee devtools llm`, the installed command users run, serves the real `openai` client."""
    chatee = Path(sys.executable).parent / "chatee"
    process = await asyncio.create_subprocess_exec(
        str(chatee),
        "devtools",
        "llm",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=15)).decode()
        assert line.startswith("LISTENING http://127.0.0.1:"), line  # loopback by default
        url = line.split()[1]
        async with httpx.AsyncClient(base_url=url) as http:
            r = await http.post("/_script", json={"match": "cli", "responses": ["from the CLI"]})
            assert r.status_code == 200
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
            reply = await c.chat.completions.create(model="test", messages=user("cli please"))
            assert reply.choices[0].message.content == "from the CLI"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) in (0, -signal.SIGTERM)
        assert process.stderr is not None
        assert b"Traceback" not in await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
