"""AG_CALL_AG to a remote A2A agent (`a2a_url`): real API and worker processes, Temporal, and a
real A2A server built from the `a2a-sdk`'s own server pieces (served by uvicorn on loopback);
the scripted LLM stands in for the model of the Chatee agent."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self

import pytest
import uvicorn
from a2a.helpers.proto_helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
)
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send
from temporalio.client import Client as TemporalClient

from chatee.a2a_remote import RemoteAgentError, ask, check_chain
from chatee.client import (
    Client,
    SessionMessage,
    StepCompleted,
    StepRetry,
    StepStarted,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from chatee.client import Invalid as Refused
from chatee.config import Settings
from chatee.devtools.llm_server import LLMServerThread
from chatee.errors import Invalid
from tests.support import (
    Stack,
    follow_until,
    new_session,
    signed_up,
    stored_messages,
    turn_events,
)
from workflows.chain import ChainBuilder

CARD_PATH = "/.well-known/agent-card.json"


class Echo(AgentExecutor):
    """Answers "remote says: <text>" as a task artifact; "ask me" wants more input, "slowly"
    takes a minute."""

    def __init__(self, remote: RemoteA2A) -> None:
        self.remote = remote

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        self.remote.asked.append(text)
        if self.remote.crash_first > 0:
            self.remote.crash_first -= 1
            raise RuntimeError("the remote agent's model is down")
        assert context.message is not None
        if context.current_task is None:
            await event_queue.enqueue_event(new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.start_work()
        self.remote.working += 1
        if "slowly" in text or self.remote.hang_first > 0:
            self.remote.hang_first -= 1
            await asyncio.sleep(60)
        if "ask me" in text:
            await updater.requires_input(updater.new_agent_message([Part(text="Which city?")]))
            return
        await updater.add_artifact([Part(text=f"remote says: {text}")])
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.remote.cancelled += 1
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


class RemoteA2A:
    """An A2A agent on a free loopback port: agent card + JSON-RPC endpoint, optional bearer
    check; before it answers, optional HTTP 503s (`unavailable_first`), crashes
    (`crash_first`) or minute-long waits (`hang_first`)."""

    def __init__(
        self,
        token: str | None = None,
        streaming: bool = True,
        unavailable_first: int = 0,
        crash_first: int = 0,
        interface_url: str | None = None,
        hang_first: int = 0,
    ) -> None:
        self.token, self.streaming = token, streaming
        self.unavailable_first, self.crash_first = unavailable_first, crash_first
        self.interface_url = interface_url
        self.hang_first = hang_first
        self.asked: list[str] = []
        self.authorizations: list[str | None] = []
        self.posts = 0
        self.working = 0
        self.cancelled = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _app(self) -> Any:
        card = AgentCard(
            name="Echo",
            description="Repeats what it is told.",
            version="1.0",
            supported_interfaces=[
                AgentInterface(
                    url=self.interface_url or f"{self.url}/",
                    protocol_binding="JSONRPC",
                    protocol_version="1.0",
                )
            ],
            capabilities=AgentCapabilities(streaming=self.streaming),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="echo", name="echo", description="echo", tags=["echo"])],
        )
        handler = DefaultRequestHandler(Echo(self), InMemoryTaskStore(), card)
        inner = Starlette(
            routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")]
        )

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await inner(scope, receive, send)
            auth = dict(scope["headers"]).get(b"authorization")
            self.authorizations.append(auth.decode() if auth else None)
            if self.token and auth != f"Bearer {self.token}".encode():
                return await JSONResponse({"error": "unauthorized"}, 401)(scope, receive, send)
            if scope["method"] == "POST":
                self.posts += 1
                if self.unavailable_first > 0:
                    self.unavailable_first -= 1
                    return await JSONResponse({"error": "busy"}, 503)(scope, receive, send)
            await inner(scope, receive, send)

        return app

    def __enter__(self) -> Self:
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the A2A test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(5)


@pytest.fixture
def remote() -> Iterator[RemoteA2A]:
    with RemoteA2A() as server:
        yield server


def requests_for(llm: LLMServerThread, marker: str) -> list[dict[str, Any]]:
    return [r["body"] for r in llm.llm.requests if marker in json.dumps(r["body"]["messages"])]


def decoded_payloads(node: Any) -> Iterator[str]:
    """The text of every payload of a Temporal history in JSON form (their data is base64)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                yield base64.b64decode(value).decode(errors="replace")
            else:
                yield from decoded_payloads(value)
    elif isinstance(node, list):
        for item in node:
            yield from decoded_payloads(item)


def step_events(events: list[TurnEvent], step: int) -> list[TurnEvent]:
    return [e for e in events if e.event.startswith("step.") and e.step == step]


def roles(messages: list[SessionMessage]) -> list[str]:
    """The roles of stored messages, oldest first (`stored_messages` is newest first)."""
    return [m.role for m in reversed(messages)]


# -- (1) the remote agent's answer feeds the next steps -----------------------------------------


async def test_remote_answer_feeds_the_next_step(
    chatee: Client, llm: LLMServerThread, remote: RemoteA2A
) -> None:
    chain = [{"type": "AG_CALL_AG", "a2a_url": remote.url}, "AG_SELF_GEN"]
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, f"what is the capital of Peru? {marker}")

    assert isinstance(events[-1], TurnCompleted), events[-1]
    assert remote.asked == [f"what is the capital of Peru? {marker}"]
    call = step_events(events, 0)
    assert [e.event for e in call] == ["step.started", "step.completed"]
    started, completed = call
    assert isinstance(started, StepStarted) and isinstance(completed, StepCompleted)
    assert started.action == "AG_CALL_AG"
    assert "remote says: what is the capital" in (completed.result or "")
    # the model of the next step read the remote agent's answer
    sent = requests_for(llm, marker)[-1]["messages"]
    notes = [m["content"] for m in sent if m["role"] == "system"]
    assert any(f"remote says: what is the capital of Peru? {marker}" in n for n in notes), sent
    assert roles(await stored_messages(chatee, session.id)) == ["user", "system", "assistant"]


async def test_remote_answer_is_the_reply_when_last(chatee: Client, llm: LLMServerThread) -> None:
    """The card's own URL works as well as the base URL, and so does a server that does not
    stream (the SDK then sends one `SendMessage` and gets the finished task)."""
    with RemoteA2A(streaming=False) as plain:
        chain = [{"type": "AG_CALL_AG", "a2a_url": plain.url + CARD_PATH, "task": "Say hi"}]
        session = await new_session(chatee, chain=chain)
        marker = uuid.uuid4().hex
        events = await turn_events(chatee, session.id, f"relay this {marker}")
    assert isinstance(events[-1], TurnCompleted), events[-1]
    assert events[-1].content == "remote says: Say hi"
    assert plain.asked == ["Say hi"]  # the step's `task`, not the user's message
    assert requests_for(llm, marker) == []  # no model ran
    messages = await stored_messages(chatee, session.id)
    assert roles(messages) == ["user", "assistant"]
    assert messages[0].content == "remote says: Say hi"


# -- (2) headers reach the remote agent, and nowhere else ---------------------------------------


async def test_headers_reach_the_remote_agent_and_stay_secret(
    chatee: Client, temporal_client: TemporalClient
) -> None:
    secret = "remote-secret-" + uuid.uuid4().hex
    with RemoteA2A(token=secret) as guarded:
        chain = [
            {
                "type": "AG_CALL_AG",
                "a2a_url": guarded.url,
                "headers": {"Authorization": f"Bearer {secret}"},
            }
        ]
        agent = await chatee.create_agent("helper", model="scripted", chain=chain)
        assert agent.chain[0]["headers"] == {"Authorization": "***"}
        session = await chatee.create_session(agent.id)
        events = await turn_events(chatee, session.id, "hello over there")
        assert isinstance(events[-1], TurnCompleted), events[-1]
        assert events[-1].content == "remote says: hello over there"
        assert guarded.authorizations and all(
            a == f"Bearer {secret}" for a in guarded.authorizations
        )

        # sending the mask back keeps the stored value: the agent still gets through
        # (`update_agent` reads the agent as shown, with its "***", and PUTs it back)
        updated = await chatee.update_agent(agent.id)
        assert updated.chain[0]["headers"] == {"Authorization": "***"}
        assert secret not in updated.model_dump_json()
        events += await turn_events(chatee, session.id, "again")
        assert isinstance(events[-1], TurnCompleted), events[-1]

    ends = [e.id for e in events if isinstance(e, TurnCompleted)]
    stored = await follow_until(chatee, session.id, lambda e: e.id == ends[-1])
    seen = json.dumps([e.data for e in stored])
    seen += "".join(m.model_dump_json() for m in await stored_messages(chatee, session.id))
    seen += (await chatee.session(session.id)).model_dump_json()
    seen += (await chatee.agent(agent.id)).model_dump_json()
    assert secret not in seen
    # nor in the session's Temporal history: the workflow carries the chain as "***"
    history = await temporal_client.get_workflow_handle(session.workflow_id).fetch_history()
    payloads = " ".join(decoded_payloads(json.loads(history.to_json())))
    assert '"headers":{"Authorization":"***"}' in payloads  # the chain is there, its secret is not
    assert secret not in payloads


async def test_a_wrong_token_fails_the_step_at_once(chatee: Client) -> None:
    with RemoteA2A(token="the-right-one") as guarded:
        chain = [
            {
                "type": "AG_CALL_AG",
                "a2a_url": guarded.url,
                "headers": {"Authorization": "Bearer a-wrong-one"},
            },
            "AG_SELF_GEN",
        ]
        session = await new_session(chatee, chain=chain)
        events = await turn_events(chatee, session.id, "let me in")
    failed = events[-1]
    assert isinstance(failed, TurnFailed)
    assert "HTTP 401" in failed.error_message, failed.data
    assert "a-wrong-one" not in json.dumps([e.data for e in events])
    assert not any(isinstance(e, StepRetry) for e in events)  # a 4xx is not retried
    assert len(guarded.authorizations) == 1


# -- (3) retries ---------------------------------------------------------------------------------


async def test_a_failing_remote_agent_is_retried_and_the_turn_completes_once(
    chatee: Client,
) -> None:
    # first attempt: HTTP 503; second: the remote agent crashes (a JSON-RPC internal error)
    with RemoteA2A(unavailable_first=1, crash_first=1) as flaky:
        session = await new_session(chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": flaky.url}])
        events = await turn_events(chatee, session.id, "third time lucky")
    retries = [e.attempt for e in events if isinstance(e, StepRetry)]
    assert retries == [2, 3], [e.event for e in events]
    assert [e.event for e in events].count("turn.completed") == 1
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "remote says: third time lucky"
    assert flaky.asked == ["third time lucky", "third time lucky"]  # the 503 never reached it
    assert roles(await stored_messages(chatee, session.id)) == ["user", "assistant"]


async def test_a_worker_killed_mid_call_the_turn_completes_once_on_a_new_worker(
    isolated_stacks: Callable[[dict[str, str]], Stack],
) -> None:
    stack = isolated_stacks({})
    first_worker = stack.start_worker()
    stack.start_api()
    with RemoteA2A(hang_first=1) as remote:
        async with await signed_up(stack.base, timeout=60) as chatee:
            session = await new_session(
                chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": remote.url}]
            )
            turn = asyncio.create_task(turn_events(chatee, session.id, "survive this"))
            for _ in range(400):  # until the remote agent works on it
                if remote.working:
                    break
                await asyncio.sleep(0.05)
            first_worker.kill()
            stack.start_worker()
            events = await asyncio.wait_for(turn, 90)
            messages = await stored_messages(chatee, session.id)
    seen = [e.event for e in events]
    assert isinstance(events[-1], TurnCompleted), events[-1]
    assert events[-1].content == "remote says: survive this"
    assert seen.count("step.retry") == 1 and seen.count("turn.completed") == 1
    assert remote.asked == ["survive this", "survive this"]
    assert roles(messages) == ["user", "assistant"]


async def test_input_required_fails_the_step_clearly(chatee: Client) -> None:
    with RemoteA2A() as asking:
        session = await new_session(
            chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": asking.url}, "AG_SELF_GEN"]
        )
        events = await turn_events(chatee, session.id, "book a flight, ask me where")
    failed = events[-1]
    assert isinstance(failed, TurnFailed)
    assert failed.error_type == "RemoteAgentInputRequired"
    assert "asked for more input" in failed.error_message
    assert "Which city?" in failed.error_message
    assert not any(isinstance(e, StepRetry) for e in events)
    assert asking.cancelled == 1  # nobody will answer it: the remote task is cancelled


async def test_cancelling_the_turn_cancels_the_remote_task(
    chatee: Client, remote: RemoteA2A
) -> None:
    session = await new_session(chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": remote.url}])
    turn = asyncio.create_task(turn_events(chatee, session.id, "take it slowly"))
    for _ in range(200):  # until the remote agent works on it
        if remote.working:
            break
        await asyncio.sleep(0.05)
    assert (await chatee.cancel(session.id)).id == session.id  # accepted, not refused
    events = await asyncio.wait_for(turn, 30)
    assert isinstance(events[-1], TurnFailed)
    assert events[-1].error_type == "cancelled"
    for _ in range(100):
        if remote.cancelled:
            break
        await asyncio.sleep(0.05)
    assert remote.cancelled == 1
    assert roles(await stored_messages(chatee, session.id)) == ["user"]


# -- (4) the deny-list ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.1.2.3:8080/a2a",  # a private network
        "https://[fd00::1]/agent",  # a unique-local IPv6 address
    ],
)
async def test_a_denied_url_is_refused_when_the_agent_is_saved(chatee: Client, url: str) -> None:
    chain = ["AG_SELF_GEN", {"type": "AG_CALL_AG", "a2a_url": url}]
    with pytest.raises(Refused) as refused:
        await chatee.create_agent("x", model="m", chain=chain)
    assert refused.value.status == 422, refused.value.body
    assert "denied network" in refused.value.detail
    assert refused.value.body["errors"][0]["loc"] == ["body", "chain", 1, "a2a_url"]
    assert await chatee.agents() == []


def test_chain_builder_builds_a_remote_call() -> None:
    built = ChainBuilder().call_remote_agent(
        "https://agents.example.com/a2a", headers={"Authorization": "Bearer t"}
    )
    assert built.self_gen().template() == [
        {
            "type": "AG_CALL_AG",
            "a2a_url": "https://agents.example.com/a2a",
            "headers": {"Authorization": "Bearer t"},
        },
        "AG_SELF_GEN",
    ]
    assert [a.type for a in built.build()] == ["AG_CALL_AG", "AG_SELF_GEN"]


@pytest.mark.parametrize(
    "step",
    [
        {"type": "AG_CALL_AG", "a2a_url": "ftp://example.com/agent"},
        {"type": "AG_CALL_AG", "a2a_url": "http://example.com", "agent_id": "1"},
        {"type": "AG_CALL_AG", "agent_id": "1", "headers": {"Authorization": "x"}},
        {"type": "AG_CALL_AG", "a2a_url": "http://example.com", "headers": {"X": "a\r\nb"}},
        {"type": "AG_CALL_AG", "a2a_url": "http://example.com", "headers": {"X": 1}},
        {"type": "AG_CALL_AG", "a2a_url": "http://example.com", "headers": {"Bad Name": "v"}},
        {"type": "AG_CALL_AG"},
    ],
)
async def test_a_malformed_remote_step_is_refused(chatee: Client, step: dict[str, Any]) -> None:
    with pytest.raises(Refused) as refused:
        await chatee.create_agent("x", model="m", chain=[step])
    assert refused.value.status == 422, refused.value.body
    assert refused.value.body["errors"]


async def test_a_card_that_points_into_a_denied_network_is_not_followed(
    chatee: Client,
) -> None:
    """The card is fetched from an allowed host, but names a metadata address as the place to
    send messages: the activity refuses it (not retried), nothing is sent there."""
    with RemoteA2A(interface_url="http://169.254.169.254/a2a") as tricky:
        session = await new_session(chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": tricky.url}])
        events = await turn_events(chatee, session.id, "hello")
    failed = events[-1]
    assert isinstance(failed, TurnFailed)
    assert failed.error_type == "RemoteAgentRefused"
    assert "169.254.169.254" in failed.error_message
    assert not any(isinstance(e, StepRetry) for e in events)


async def test_loopback_is_refused_unless_allowed(remote: RemoteA2A) -> None:
    """The same rule as MCP servers: `mcp.allow_loopback` is off by default (the test stack
    turns it on), at validation and again when the call is made."""
    strict = Settings(mcp={"allow_loopback": False})
    with pytest.raises(Invalid) as refused:
        await check_chain([{"type": "AG_CALL_AG", "a2a_url": remote.url}], strict)
    assert "mcp.allow_loopback" in refused.value.detail
    with pytest.raises(RemoteAgentError) as call:
        await ask(remote.url, {}, "hello", strict)
    assert call.value.kind == "RemoteAgentRefused" and not call.value.retryable
    assert remote.asked == []
    allowed = Settings(mcp={"allow_loopback": True})
    answer = await ask(remote.url, {}, "hello", allowed)
    assert answer.text == "remote says: hello" and answer.agent_name == "Echo"


# -- (5) Chatee to Chatee ------------------------------------------------------------------------


async def test_an_agent_calls_another_users_chatee_agent_over_a2a(
    stack: Stack, chatee: Client, other_chatee: Client, llm: LLMServerThread
) -> None:
    """Agent A (of `chatee`) asks agent B (of `other_chatee`) through B's A2A endpoint, with an
    API key `other_chatee` made for it; B's answer feeds A's own model."""
    expert = await other_chatee.create_agent(
        "expert", model="scripted", chain=[{"type": "AG_ACCEPT", "text": "Use a B-tree."}]
    )
    key = (await other_chatee.create_api_key("for A", ["chat"])).key
    url = f"{stack.base}/a2a/agents/{expert.id}"
    chain = [
        {"type": "AG_CALL_AG", "a2a_url": url, "headers": {"Authorization": f"Bearer {key}"}},
        "AG_SELF_GEN",
    ]
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, f"how do I index this? {marker}")
    assert isinstance(events[-1], TurnCompleted), events[-1]
    sent = requests_for(llm, marker)[-1]["messages"]
    notes = [m["content"] for m in sent if m["role"] == "system"]
    assert any("'expert'" in n and "Use a B-tree." in n for n in notes), notes
    assert key not in json.dumps([e.data for e in events])

    # the card URL works too; without the key, B's endpoint is refused and the step fails
    relay = await new_session(
        chatee, chain=[{"type": "AG_CALL_AG", "a2a_url": f"{url}/.well-known/agent-card.json"}]
    )
    events = await turn_events(chatee, relay.id, "no key")
    assert isinstance(events[-1], TurnFailed)
    assert "HTTP 401" in events[-1].error_message
