"""A scripted OpenAI-compatible LLM server: the stand-in for the model in tests and benchmarks.

It speaks enough of the OpenAI HTTP API for the official ``openai`` client to be exercised for
real: ``POST /v1/chat/completions`` (JSON or SSE streaming, tool calls, usage), ``GET /v1/models``
and ``POST /v1/embeddings`` (deterministic hashed bag-of-words vectors).

Without a script every chat request is answered with ``echo: <last user message>``, streamed a few
words per chunk. Tests program replies per conversation by registering scripts keyed on a
substring of the last user message, either in Python (``app.state.llm.script(...)``) or over HTTP
(``POST /_script``). A reply can be text, explicit chunks, JSON, tool calls, an HTTP error, or a
stream that the "provider" cuts off half-way; it can be slowed down with delays.

Run in-process with :class:`LLMServerThread`, or as a process::

    chatee devtools llm --host 127.0.0.1 --port 0 [--api-key KEY]
    python -m chatee.devtools.llm_server --host 127.0.0.1 --port 0 [--api-key KEY]

which prints ``LISTENING http://127.0.0.1:<port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import logging
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "scripted-llm"
EMBEDDING_DIMENSIONS = 1024
WORDS_PER_CHUNK = 3
ARGUMENT_PIECE_CHARS = 16

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDING_DIMENSIONS",
    "LLMServerThread",
    "ScriptedError",
    "ScriptedLLM",
    "ScriptedResponse",
    "ScriptedToolCall",
    "ScriptedUsage",
    "create_app",
    "embed_text",
    "serve",
    "split_words",
]


# ---------------------------------------------------------------------------------------------
# Script model
# ---------------------------------------------------------------------------------------------


class ScriptedError(BaseModel):
    """Answer with this HTTP status and an OpenAI-style error body instead of a completion."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(500, ge=400, le=599)
    message: str = "Scripted error"
    type: str | None = None
    code: str | None = None


class ScriptedToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


class ScriptedUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ScriptedResponse(BaseModel):
    """One scripted reply. With none of text/chunks/json/tool_calls, the default echo is used."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    chunks: list[str] | None = None
    json_value: Any = Field(None, alias="json")
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    delay_ms: float = Field(0, ge=0)
    chunk_delay_ms: float = Field(0, ge=0)
    usage: ScriptedUsage | None = None
    error: ScriptedError | None = None
    drop_after_chunks: int | None = Field(None, ge=0)
    finish_reason: str | None = None


ResponseLike = ScriptedResponse | Mapping[str, Any] | str


def _to_response(value: ResponseLike) -> ScriptedResponse:
    if isinstance(value, ScriptedResponse):
        return value
    if isinstance(value, str):
        return ScriptedResponse(text=value)
    return ScriptedResponse.model_validate(value)


class ScriptRequest(BaseModel):
    """Body of ``POST /_script``."""

    model_config = ConfigDict(extra="forbid")

    match: str
    responses: list[ScriptedResponse | str]


@dataclass
class _Script:
    match: str
    responses: deque[ScriptedResponse]


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


class ScriptedLLM:
    """Scripts, recorded requests and settings of one server. Thread-safe."""

    def __init__(self, *, model: str = DEFAULT_MODEL, api_key: str | None = None) -> None:
        self.model = model
        self.api_key = api_key
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._embedding_failures: list[list[Any]] = []  # [match, times left, status]

    def script(self, match: str, responses: Iterable[ResponseLike]) -> None:
        """Answer the next requests whose last user message contains ``match``, in order.

        A response is a :class:`ScriptedResponse`, its dict form, or a plain string (its text).
        Scripts are tried in registration order; an exhausted script is removed, after which
        matching requests get the default echo (or the next script that matches).
        """
        queue = deque(_to_response(response) for response in responses)
        if not queue:
            return
        with self._lock:
            self._scripts.append(_Script(match=match, responses=queue))

    def reset(self) -> None:
        """Forget all scripts and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self._embedding_failures.clear()

    def fail_embeddings(self, match: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` embeddings requests with an input containing ``match``
        with an HTTP ``status`` error."""
        with self._lock:
            self._embedding_failures.append([match, times, status])

    def embedding_failure(self, texts: Sequence[str]) -> int | None:
        """The status to fail this embeddings request with, if a failure is armed for it."""
        with self._lock:
            for failure in self._embedding_failures:
                match, left, status = failure
                if left > 0 and any(match in text for text in texts):
                    failure[1] -= 1
                    return int(status)
        return None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded chat requests, oldest first: ``{"body", "has_authorization", "script"}``."""
        with self._lock:
            return list(self._requests)

    def take(self, last_user_text: str) -> tuple[str | None, ScriptedResponse | None]:
        """Pop the next scripted response for a request; ``(None, None)`` means default echo."""
        with self._lock:
            for script in self._scripts:
                if script.match in last_user_text and script.responses:
                    response = script.responses.popleft()
                    if not script.responses:
                        self._scripts.remove(script)
                    return script.match, response
        return None, None

    def record(
        self, body: Mapping[str, Any], *, has_authorization: bool, script: str | None
    ) -> None:
        with self._lock:
            self._requests.append(
                {"body": dict(body), "has_authorization": has_authorization, "script": script}
            )

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


class OpenAIHTTPError(Exception):
    """Raised inside handlers; rendered as ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self, status: int, message: str, *, type: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _default_error_type(status)
        self.code = code if code is not None else _default_error_code(status)

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _default_error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _default_error_code(status: int) -> str | None:
    return {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)


class _StreamDropped(Exception):
    """Raised mid-body so uvicorn closes the connection without finishing the response."""


class _DropFilter(logging.Filter):
    """Keep uvicorn from logging our deliberate connection drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_drop(record.exc_info[1] if record.exc_info else None)


def _is_drop(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, _StreamDropped):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_drop(inner) for inner in exc.exceptions)
    return _is_drop(exc.__cause__ or exc.__context__)


_DROP_FILTER = _DropFilter()


def message_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def count_words(messages: Sequence[Any]) -> int:
    return sum(
        len(message_text(message.get("content")).split())
        for message in messages
        if isinstance(message, Mapping)
    )


def split_words(text: str, words_per_chunk: int = WORDS_PER_CHUNK) -> list[str]:
    """Split into chunks of a few words; spaces are kept so ``"".join(chunks) == text``."""
    pieces = [piece for piece in re.split(r"(?<= )(?=[^ ])", text) if piece]
    return [
        "".join(pieces[start : start + words_per_chunk])
        for start in range(0, len(pieces), words_per_chunk)
    ]


def _split_fixed(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)]


def embed_text(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Deterministic L2-normalised hashed vector (all zeros for no words): each word but the
    commonest counts once, and its character trigrams a little, so "retry" lands near
    "retries" — lexical similarity, good enough to test ranking without a real model."""
    vector = [0.0] * dimensions
    for word in sorted(set(re.findall(r"\w+", text.lower())) - _STOPWORDS):
        _bump(vector, word, 1.0)
        padded = f"<{word}>"
        for at in range(len(padded) - 2):
            _bump(vector, "#" + padded[at : at + 3], 0.25)
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "has", "have",
    "how", "i", "in", "is", "it", "of", "on", "or", "that", "the", "this", "to", "was", "what",
    "when", "where", "which", "who", "why", "with", "can", "could", "may", "must", "should",
    "will", "would",
})  # fmt: skip


def _bump(vector: list[float], feature: str, weight: float) -> None:
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    vector[int.from_bytes(digest, "little") % len(vector)] += weight


# ---------------------------------------------------------------------------------------------
# Completions
# ---------------------------------------------------------------------------------------------


@dataclass
class _ToolCallPlan:
    id: str
    name: str
    arguments: str


@dataclass
class _Completion:
    """What to answer, independent of streaming or not."""

    id: str
    model: str
    created: int
    content: list[str]
    tool_calls: list[_ToolCallPlan]
    finish_reason: str
    usage: dict[str, int]
    response: ScriptedResponse

    @property
    def text(self) -> str:
        return "".join(self.content)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text if self.content or not self.tool_calls else None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return message

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(),
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
        }

    def deltas(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in self.content]
        for index, call in enumerate(self.tool_calls):
            function = {"name": call.name, "arguments": ""}
            head = {"index": index, "id": call.id, "type": "function", "function": function}
            deltas.append({"tool_calls": [head]})
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in _split_fixed(call.arguments, ARGUMENT_PIECE_CHARS)
            ]
        return deltas

    def chunks(self, *, include_usage: bool) -> list[dict[str, Any]]:
        deltas = self.deltas()
        chunks: list[dict[str, Any]] = []
        for position, delta in enumerate(deltas):
            last = position == len(deltas) - 1
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": self.finish_reason if last else None,
            }
            chunks.append(self._chunk([choice], include_usage=include_usage))
        if include_usage:
            chunks.append(self._chunk([], include_usage=True) | {"usage": self.usage})
        return chunks

    def _chunk(self, choices: list[dict[str, Any]], *, include_usage: bool) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = None
        return chunk


def _plan(
    llm: ScriptedLLM, body: Mapping[str, Any], response: ScriptedResponse | None
) -> _Completion:
    messages = body["messages"]
    response = response or ScriptedResponse()
    seq = llm.next_id()

    if response.chunks is not None:
        content = [piece for piece in response.chunks if piece]
    elif response.json_value is not None:
        content = split_words(json.dumps(response.json_value))
    elif response.text is not None:
        content = split_words(response.text)
    elif response.tool_calls:
        content = []
    else:
        content = split_words(f"echo: {last_user_text(messages)}")

    tool_calls = [
        _ToolCallPlan(
            id=call.id or f"call_{seq:04d}_{index}",
            name=call.name,
            arguments=call.arguments_json(),
        )
        for index, call in enumerate(response.tool_calls)
    ]
    finish_reason = response.finish_reason or ("tool_calls" if tool_calls else "stop")

    prompt_tokens = count_words(messages)
    completion_tokens = len(content) + sum(
        1 + len(_split_fixed(call.arguments, ARGUMENT_PIECE_CHARS)) for call in tool_calls
    )
    if response.usage is not None:
        if response.usage.prompt_tokens is not None:
            prompt_tokens = response.usage.prompt_tokens
        if response.usage.completion_tokens is not None:
            completion_tokens = response.usage.completion_tokens
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }

    model = body.get("model")
    return _Completion(
        id=f"chatcmpl-{seq:06d}",
        model=model if isinstance(model, str) and model else llm.model,
        created=int(time.time()),
        content=content,
        tool_calls=tool_calls,
        finish_reason=finish_reason,
        usage=usage,
        response=response,
    )


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def _stream_body(completion: _Completion, *, include_usage: bool) -> AsyncIterator[bytes]:
    response = completion.response
    drop_after = response.drop_after_chunks
    if response.delay_ms:
        await asyncio.sleep(response.delay_ms / 1000)
    for position, chunk in enumerate(completion.chunks(include_usage=include_usage)):
        if position == drop_after:
            raise _StreamDropped
        if position and response.chunk_delay_ms:
            await asyncio.sleep(response.chunk_delay_ms / 1000)
        yield _sse(chunk)
    if drop_after is not None:
        raise _StreamDropped
    yield _sse("[DONE]")


async def _truncated_body(payload: bytes) -> AsyncIterator[bytes]:
    yield payload[: len(payload) // 2]
    raise _StreamDropped


# ---------------------------------------------------------------------------------------------
# App
# ---------------------------------------------------------------------------------------------


def create_app(*, api_key: str | None = None, model: str = DEFAULT_MODEL) -> FastAPI:
    """The server app; its :class:`ScriptedLLM` is ``app.state.llm``."""
    llm = ScriptedLLM(model=model, api_key=api_key)
    app = FastAPI(title="Scripted LLM", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llm = llm
    logging.getLogger("uvicorn.error").addFilter(_DROP_FILTER)

    @app.exception_handler(OpenAIHTTPError)
    async def _openai_error(request: Request, exc: OpenAIHTTPError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return OpenAIHTTPError(400, f"Invalid request: {exc.errors()}").response()

    def authorize(request: Request) -> None:
        if llm.api_key is None:
            return
        if request.headers.get("authorization") != f"Bearer {llm.api_key}":
            raise OpenAIHTTPError(401, "Incorrect API key provided.")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        request: Request, body: dict[str, Any] = Body(...)
    ) -> JSONResponse | StreamingResponse:
        match: str | None = None
        try:
            authorize(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise OpenAIHTTPError(400, "'messages' must be a non-empty array.")
            match, response = llm.take(last_user_text(messages))
        finally:
            has_authorization = "authorization" in request.headers
            llm.record(body, has_authorization=has_authorization, script=match)
        completion = _plan(llm, body, response)
        scripted = completion.response

        if scripted.error is not None and scripted.delay_ms:
            await asyncio.sleep(scripted.delay_ms / 1000)
        if scripted.error is not None:
            error = scripted.error
            raise OpenAIHTTPError(error.status, error.message, type=error.type, code=error.code)

        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
            return StreamingResponse(
                _stream_body(completion, include_usage=include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )

        if scripted.delay_ms:
            await asyncio.sleep(scripted.delay_ms / 1000)
        if scripted.drop_after_chunks is not None:
            payload = json.dumps(completion.body()).encode()
            return StreamingResponse(
                _truncated_body(payload),
                media_type="application/json",
                headers={"Content-Length": str(len(payload))},
            )
        return JSONResponse(completion.body())

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        entry = {"id": llm.model, "object": "model", "created": 0, "owned_by": "chatee-tests"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        authorize(request)
        texts = _embedding_inputs(body.get("input"))
        if (failure := llm.embedding_failure(texts)) is not None:
            raise OpenAIHTTPError(failure, "Scripted embeddings failure.")
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        if not isinstance(dimensions, int) or dimensions <= 0:
            raise OpenAIHTTPError(400, "'dimensions' must be a positive integer.")
        base64_output = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dimensions)
            encoded: list[float] | str = vector
            if base64_output:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(re.findall(r"\w+", text)) for text in texts)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model") or llm.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/_script")
    async def add_script(script: ScriptRequest) -> dict[str, Any]:
        llm.script(script.match, script.responses)
        return {"ok": True}

    @app.delete("/_script")
    async def clear_scripts() -> dict[str, Any]:
        llm.reset()
        return {"ok": True}

    @app.get("/_requests")
    async def recorded_requests() -> list[dict[str, Any]]:
        return llm.requests

    return app


def _embedding_inputs(value: Any) -> list[str]:
    """Strings to embed: a string, a list of strings, or token arrays (tokens become words)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise OpenAIHTTPError(400, "'input' must be a string, a list of strings or token arrays.")


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class LLMServerThread:
    """Runs the server with uvicorn in a background thread on a free port.

    ``with LLMServerThread() as server:`` then point the client at ``server.base_url`` and
    script it through ``server.llm``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.port = port
        self.app = create_app(api_key=api_key, model=model)
        self.llm: ScriptedLLM = self.app.state.llm
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT`` (control endpoints live here)."""
        return _url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            raise RuntimeError("LLMServerThread already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="llm-server", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("scripted LLM server failed to start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _AnnouncingServer(uvicorn.Server):
    """Prints ``LISTENING <url>`` once the sockets accept connections."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            print(f"LISTENING {_url(host, port)}", flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    model: str = DEFAULT_MODEL,
    log_level: str = "warning",
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (what ``chatee devtools llm`` runs)."""
    app = create_app(api_key=api_key, model=model)
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=1)
    _AnnouncingServer(config).run(sockets=[_bind(host, port)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model id served")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    serve(args.host, args.port, api_key=args.api_key, model=args.model, log_level=args.log_level)


if __name__ == "__main__":
    main()
