"""Remote A2A agents as an ActionChain step: `{"type": "AG_CALL_AG", "a2a_url": …, "headers": …}`.

Two halves, both used outside workflows:
- configuration: the URL must pass the MCP deny-list (`mcp.url_denylist`, loopback only with
  `mcp.allow_loopback`), checked when the agent is saved and again before every call; header
  values are secrets, shown as `***` and kept when `***` is sent back (as MCP headers are);
- the call, through the official `a2a-sdk` client: resolve the agent card (the URL is the card's
  own or the agent's base URL), send one message — streamed when the card says it can — and
  turn whatever comes back (a message, or a task with artifacts) into the answer's text.

Every failure is a `RemoteAgentError` that says whether another attempt may help (the network,
a 5xx, a failed task) or not (a refusal, a 4xx, a task that wants input we cannot give).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError, AgentCardResolutionError
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError, InternalError
from google.protobuf.json_format import MessageToDict

from chatee.config import Settings
from chatee.errors import Invalid
from chatee.logging import register_secret
from chatee.mcp.errors import McpError
from chatee.mcp.registry import MASK
from chatee.mcp.safety import check_url
from workflows.chain import AG_CALL_AG, AG_SELF_DECIDE

DONE = TaskState.TASK_STATE_COMPLETED
ENDED = {
    TaskState.TASK_STATE_FAILED: "failed the task",
    TaskState.TASK_STATE_CANCELED: "cancelled the task",
    TaskState.TASK_STATE_REJECTED: "rejected the task",
    TaskState.TASK_STATE_INPUT_REQUIRED: "asked for more input, which AG_CALL_AG cannot give",
    TaskState.TASK_STATE_AUTH_REQUIRED: "asked for authorization, which AG_CALL_AG cannot give",
}
BINDINGS = [TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON]  # HTTP ones: no gRPC here
POLL_SECONDS = 1.0  # a task that is still running when its answer (or stream) ends is polled


class RemoteAgentError(Exception):
    """A call that did not produce an answer. `kind` is the Temporal error type."""

    def __init__(self, message: str, kind: str, retryable: bool) -> None:
        super().__init__(message)
        self.message, self.kind, self.retryable = message, kind, retryable


# -- configuration --------------------------------------------------------------------------


def remote_steps(chain: Any, where: str = "chain") -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, step) for every remote AG_CALL_AG of a chain template, branches included."""
    for i, item in enumerate(chain if isinstance(chain, list) else []):
        if not isinstance(item, dict):
            continue
        if item.get("type") == AG_CALL_AG and "a2a_url" in item:
            yield f"{where}[{i}]", item
        if item.get("type") == AG_SELF_DECIDE and isinstance(item.get("branches"), dict):
            for option, sub in item["branches"].items():
                yield from remote_steps(sub, f"{where}[{i}].branches.{option}")


def redact_chain(chain: Any) -> Any:
    """The chain as clients see it: remote agents' header values read `***`."""
    chain = json.loads(json.dumps(chain))
    for _, step in remote_steps(chain):
        step["headers"] = {name: MASK for name in step.get("headers") or {}}
    return chain


async def check_chain(chain: list[Any], settings: Settings, stored: Any = None) -> list[Any]:
    """The chain to store: each `***` header value replaced by the stored one (same URL, same
    header name), each remote URL checked against the deny-list. An agent with a URL that is
    refused or does not resolve is not saved (422)."""
    chain = json.loads(json.dumps(chain))
    kept = _header_values(stored)
    for where, step in remote_steps(chain):
        loc = ["body", *_path(where)]
        for name, value in (step.get("headers") or {}).items():
            if value == MASK:
                if (step["a2a_url"], name) not in kept:
                    raise _invalid(
                        f"{where}.headers.{name}: there is no stored value to keep",
                        [*loc, "headers", name],
                    )
                step["headers"][name] = kept[(step["a2a_url"], name)]
            register_secret(step["headers"][name])
        try:
            await check_url(step["a2a_url"], settings)
        except McpError as exc:
            raise _invalid(f"{where}.a2a_url: {exc.detail}", [*loc, "a2a_url"]) from None
    return chain


def unmask_headers(url: str, headers: dict[str, str], stored: Any) -> dict[str, str]:
    """The headers to send: each `***` is the value stored in the agent's chain. Workflows
    carry the redacted chain, so no secret lands in a Temporal history."""
    kept = _header_values(stored)
    out = {}
    for name, value in headers.items():
        if value == MASK:
            if (url, name) not in kept:
                raise RemoteAgentError(
                    f"the agent's chain no longer holds the header {name!r} for this remote "
                    "agent (it was changed during the turn)",
                    "RemoteAgentChanged",
                    retryable=False,
                )
            value = kept[(url, name)]
        register_secret(value)
        out[name] = value
    return out


def _header_values(chain: Any) -> dict[tuple[str, str], str]:
    """(url, header name) -> value, for the remote agents of a stored chain."""
    return {
        (step["a2a_url"], name): value
        for _, step in remote_steps(chain)
        for name, value in (step.get("headers") or {}).items()
        if value != MASK
    }


def _invalid(detail: str, loc: list[Any]) -> Invalid:
    return Invalid(detail, errors=[{"loc": loc, "msg": detail, "type": "value_error"}])


def _path(where: str) -> list[Any]:
    """`chain[0].branches.yes[1]` → ["chain", 0, "branches", "yes", 1]."""
    out: list[Any] = []
    for piece in where.replace("[", ".").replace("]", "").split("."):
        out.append(int(piece) if piece.isdigit() else piece)
    return out


def host_of(url: str) -> str:
    """What a log line or a summary may say about the URL: its host, never its credentials."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


# -- the call -------------------------------------------------------------------------------


@dataclass
class RemoteAnswer:
    text: str
    agent_name: str
    task_id: str | None = None


async def ask(
    url: str,
    headers: dict[str, str],
    text: str,
    settings: Settings,
    message_id: str | None = None,
    max_chars: int = 64 * 1024,
    read_seconds: float = 300,  # the longest wait for the next bytes of an answer
) -> RemoteAnswer:
    """Send `text` to the remote agent at `url` and wait for its answer."""
    for value in headers.values():
        register_secret(value)
    await _checked(url, settings)
    limits = httpx.Timeout(read_seconds, connect=settings.mcp.connect_timeout_seconds)
    async with httpx.AsyncClient(headers=headers, timeout=limits) as http:
        card = await _card(http, url)
        for interface in card.supported_interfaces:  # where the messages will go
            if interface.protocol_binding in BINDINGS and interface.url:
                await _checked(interface.url, settings)
        config = ClientConfig(
            httpx_client=http, streaming=True, supported_protocol_bindings=BINDINGS
        )
        try:  # the card's preferred binding among ours
            client = ClientFactory(config).create(card)
        except ValueError as exc:  # no transport we speak
            raise RemoteAgentError(
                f"the remote agent at {host_of(url)} cannot be reached: {exc}",
                "RemoteAgentUnsupported",
                retryable=False,
            ) from None
        request = SendMessageRequest(
            message=Message(
                role=Role.ROLE_USER,
                message_id=message_id or uuid.uuid4().hex,
                parts=[Part(text=text)],
            )
        )
        reader = _Reader(card.name or host_of(url), max_chars)
        try:
            async for event in client.send_message(request):
                reader.take(event)
            while reader.task_id and reader.state not in (DONE, *ENDED):
                await asyncio.sleep(POLL_SECONDS)  # not streamed, or the stream ended early
                reader.take_task(await client.get_task(GetTaskRequest(id=reader.task_id)))
        except asyncio.CancelledError:
            await _cancel(client, reader.task_id)
            raise
        except (A2AError, httpx.HTTPError) as exc:
            raise _failure(exc, reader.name) from None
        if reader.state != DONE and reader.state not in ENDED:
            raise RemoteAgentError(
                f"the remote agent {reader.name!r} ended its answer without finishing",
                "RemoteAgentFailed",
                retryable=True,
            )
        if reader.state in ENDED:
            if reader.state in (
                TaskState.TASK_STATE_INPUT_REQUIRED,
                TaskState.TASK_STATE_AUTH_REQUIRED,
            ):
                await _cancel(client, reader.task_id)  # nobody will answer it
            said = f": {reader.status_text}" if reader.status_text else ""
            raise RemoteAgentError(
                f"the remote agent {reader.name!r} {ENDED[reader.state]}{said}"[:1000],
                _ENDED_KIND.get(reader.state, "RemoteAgentFailed"),
                retryable=reader.state == TaskState.TASK_STATE_FAILED,
            )
        return RemoteAnswer(reader.answer(), reader.name, reader.task_id)


_ENDED_KIND = {
    TaskState.TASK_STATE_REJECTED: "RemoteAgentRejected",
    TaskState.TASK_STATE_CANCELED: "RemoteAgentCancelled",
    TaskState.TASK_STATE_INPUT_REQUIRED: "RemoteAgentInputRequired",
    TaskState.TASK_STATE_AUTH_REQUIRED: "RemoteAgentInputRequired",
}


async def _checked(url: str, settings: Settings) -> None:
    try:
        await check_url(url, settings)
    except McpError as exc:
        raise RemoteAgentError(
            f"the remote agent URL is refused: {exc.detail}", "RemoteAgentRefused", False
        ) from None


async def _card(http: httpx.AsyncClient, url: str) -> AgentCard:
    """The agent card at `url` itself when it names a JSON document, else at the SDK's
    well-known path under it (`<url>/.well-known/agent-card.json`)."""
    is_card = urlsplit(url).path.endswith(".json")
    resolver = A2ACardResolver(http, url)
    try:
        return await resolver.get_agent_card(relative_card_path="/" if is_card else None)
    except AgentCardResolutionError as exc:
        status = exc.status_code
        retryable = (
            _transient(status)
            if status
            else isinstance(exc.__cause__, httpx.RequestError)  # the network, not the card
        )
        raise RemoteAgentError(
            f"no agent card at {host_of(url)}"
            + (f" (HTTP {status})" if status else f": {_reason(exc)}"),
            "RemoteAgentUnavailable" if retryable else "RemoteAgentError",
            retryable=retryable,
        ) from None


def _transient(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


def _failure(exc: Exception, name: str) -> RemoteAgentError:
    status = None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, httpx.HTTPStatusError):
            status = cause.response.status_code
        cause = cause.__cause__
    if status is not None:
        return RemoteAgentError(
            f"the remote agent {name!r} answered HTTP {status}",
            "RemoteAgentUnavailable" if _transient(status) else "RemoteAgentError",
            retryable=_transient(status),
        )
    retryable = isinstance(exc, (InternalError, A2AClientTimeoutError, httpx.HTTPError)) or (
        type(exc) is A2AClientError  # the network, or a reply that is not JSON-RPC
    )
    return RemoteAgentError(
        f"the remote agent {name!r} could not be reached or answered an error: {_reason(exc)}",
        "RemoteAgentUnavailable" if retryable else "RemoteAgentError",
        retryable=retryable,
    )


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


async def _cancel(client: Any, task_id: str | None) -> None:
    """Best effort: tell the remote agent we stopped waiting for its task."""
    if not task_id:
        return
    try:
        async with asyncio.timeout(5):
            await client.cancel_task(CancelTaskRequest(id=task_id))
    except (A2AError, httpx.HTTPError, TimeoutError):
        pass


class _Reader:
    """Folds a stream of A2A events (or one answer, or polled tasks) into the answer."""

    def __init__(self, name: str, max_chars: int) -> None:
        self.name, self.max_chars = name, max_chars
        self.task_id: str | None = None
        self.state: int = TaskState.TASK_STATE_UNSPECIFIED
        self.status_text = ""
        self.message_text: str | None = None
        self.artifacts: dict[str, list[str]] = {}  # id -> text pieces, in arrival order

    def take(self, event: StreamResponse) -> None:
        kind = event.WhichOneof("payload")
        if kind == "message":
            self.message_text = _text(event.message.parts)
            self.state = DONE
        elif kind == "task":
            self.take_task(event.task)
        elif kind == "status_update":
            self.task_id = event.status_update.task_id or self.task_id
            self._status(event.status_update.status)
        elif kind == "artifact_update":
            update = event.artifact_update
            self.task_id = update.task_id or self.task_id
            pieces = self.artifacts.setdefault(update.artifact.artifact_id, [])
            if not update.append:
                pieces.clear()
            pieces.append(_text(update.artifact.parts))

    def take_task(self, task: Task) -> None:
        self.task_id = task.id or self.task_id
        for artifact in task.artifacts:
            self.artifacts[artifact.artifact_id] = [_text(artifact.parts)]
        if not self.artifacts and task.history:
            said = [m for m in task.history if m.role == Role.ROLE_AGENT]
            if said:
                self.message_text = _text(said[-1].parts)
        self._status(task.status)

    def _status(self, status: Any) -> None:
        self.state = status.state
        if status.HasField("message"):
            self.status_text = _text(status.message.parts)

    def answer(self) -> str:
        texts = ["".join(p) for p in self.artifacts.values()]
        text = "\n".join(t for t in texts if t) or self.message_text or self.status_text
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + " … [truncated]"
        return text


def _text(parts: Any) -> str:
    out = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            out.append(part.text)
        elif kind == "data":
            out.append(json.dumps(MessageToDict(part.data), ensure_ascii=False))
        elif kind == "url":
            out.append(part.url)
        elif kind == "raw":
            out.append(f"[{part.media_type or 'binary'} content, {len(part.raw)} bytes]")
    return "\n".join(out)
