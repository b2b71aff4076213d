"""MCP: the server registry API, all three transports against real servers (the SDK's
MCPServer in `chatee/devtools/mcp_demo.py`, and the npm reference server), timeouts and
reconnects, the safety rules, the tools agents see, the `CallMcpTool` activity, and Chatee's
own `/mcp` endpoint driven by the `mcp` SDK client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from redis.asyncio import Redis
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.mcp import ToolActivities, fit
from chatee import session_store, temporal
from chatee.bus import EventBus
from chatee.client import (
    ApiError,
    HumanRequest,
    McpToolResult,
    NotFound,
    ToolCall,
    ToolResult,
    TurnCompleted,
    Unavailable,
)
from chatee.client import Client as ChateeClient
from chatee.client import McpServer as ChateeMcpServer
from chatee.config import Settings, load_settings
from chatee.db import create_engine, session_factory
from chatee.devstack import free_port, port_open
from chatee.devtools.llm_server import LLMServerThread
from chatee.ids import new_id
from chatee.mcp import (
    AgentTool,
    McpRefused,
    agent_tools,
    check_stdio_command,
    check_url,
    denied_network,
    openai_tools,
    tool_name,
)
from chatee.models import Agent, McpServer, Message
from chatee.services import Services
from tests.support import (
    Api,
    Stack,
    follow_until,
    new_session,
    signed_up,
    stored_messages,
    turn_events,
)
from workflows.types import ToolCallInput

REPO = Path(__file__).resolve().parent.parent
DEMO = str(REPO / "chatee" / "devtools" / "mcp_demo.py")
NPM_PACKAGE = "@modelcontextprotocol/server-everything"
NPM_VERSION = "2026.8.31"
NPM_CACHE = REPO / ".cache" / "npm-mcp"
DEMO_TOKEN = "demo-" + uuid.uuid4().hex  # the HTTP demo servers require it as a bearer token
EVERYTHING = NPM_CACHE / "node_modules" / "@modelcontextprotocol" / "server-everything"


# -- real MCP servers --------------------------------------------------------------------------


class DemoServer:
    """`chatee/devtools/mcp_demo.py` over HTTP (sse or streamable-http) in a process of its own."""

    def __init__(self, transport: str, log: Path, token: str | None = None) -> None:
        self.transport = transport
        self.port = free_port()
        self.log = log
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        path = "/sse" if self.transport == "sse" else "/mcp"
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> DemoServer:
        with self.log.open("ab") as out:
            argv = [sys.executable, DEMO, "--transport", self.transport, "--port", str(self.port)]
            self.proc = subprocess.Popen(
                argv + (["--token", self.token] if self.token else []),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait(self) -> DemoServer:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", self.port):
            assert self.proc and self.proc.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the demo MCP server never listened"
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def demo_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DemoServer]]:
    tmp = tmp_path_factory.mktemp("mcp-demo")
    servers = {
        t: DemoServer(t, tmp / f"{t}.log", DEMO_TOKEN).start() for t in ("sse", "streamable-http")
    }
    for server in servers.values():
        server.wait()
    yield servers
    for server in servers.values():
        server.kill()


def server_body(transport: str, demo_http: dict[str, DemoServer], **extra: Any) -> dict[str, Any]:
    name = f"demo-{transport}-{uuid.uuid4().hex[:6]}"
    if transport == "stdio":
        return {"name": name, "transport": "stdio", "command": sys.executable, "args": [DEMO]}
    url = demo_http["sse" if transport == "sse" else "streamable-http"].url
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}", **extra.pop("headers", {})}
    return {"name": name, "transport": transport, "url": url, "headers": headers, **extra}


@pytest.fixture(scope="module")
def short_timeouts(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second API process (same database and users) whose MCP calls time out after 2 s."""
    env = {
        **stack.env,
        "CHATEE_MCP__CALL_TIMEOUT_SECONDS": "2",
        "CHATEE_MCP__CONNECT_TIMEOUT_SECONDS": "3",
    }
    api = Stack(env=env, tmp=tmp_path_factory.mktemp("mcp-short"))
    api.start_api()
    yield api
    api.stop()


@pytest.fixture
async def short_chatee(short_timeouts: Stack) -> AsyncIterator[ChateeClient]:
    """A new person, signed in on the API process with short MCP timeouts."""
    async with await signed_up(short_timeouts.base) as client:
        yield client


# -- safety rules (no servers needed) ----------------------------------------------------------


def settings_with(**mcp: Any) -> Settings:
    return load_settings(mcp=mcp)


def test_denylist_refuses_private_and_loopback_addresses_unless_loopback_is_allowed() -> None:
    strict = settings_with(allow_loopback=False)
    assert str(denied_network("127.0.0.1", strict)) == "127.0.0.0/8"
    assert str(denied_network("::1", strict)) == "::1/128"
    assert str(denied_network("::ffff:10.1.2.3", strict)) == "10.0.0.0/8"  # IPv4-mapped
    assert str(denied_network("169.254.169.254", strict)) == "169.254.0.0/16"  # cloud metadata
    assert denied_network("93.184.216.34", strict) is None
    assert denied_network("2606:4700::1111", strict) is None

    loopback = settings_with(allow_loopback=True)
    assert denied_network("127.0.0.1", loopback) is None
    assert denied_network("::1", loopback) is None
    assert str(denied_network("192.168.1.10", loopback)) == "192.168.0.0/16"  # still private


async def test_url_check_resolves_the_host_before_deciding() -> None:
    strict = settings_with(allow_loopback=False)
    with pytest.raises(McpRefused, match=r"'localhost' resolves to .*allow_loopback"):
        await check_url("http://localhost:9/mcp", strict)
    with pytest.raises(McpRefused, match="10.0.0.0/8"):
        await check_url("https://10.20.30.40/mcp", settings_with(allow_loopback=True))
    await check_url("http://localhost:9/mcp", settings_with(allow_loopback=True))
    await check_url("http://93.184.216.34/mcp", strict)  # a public literal: no lookup needed


def test_stdio_commands_must_be_allow_listed() -> None:
    settings = settings_with(stdio_allowlist=["node", sys.executable])
    check_stdio_command("node", settings)
    check_stdio_command(sys.executable, settings)
    node = shutil.which("node")
    if node:  # a full path is fine when it is where an allowed name resolves to
        check_stdio_command(node, settings)
    for refused in ("bash", "/bin/sh", "./node", "/tmp/node"):
        with pytest.raises(McpRefused, match="not allowed"):
            check_stdio_command(refused, settings)
    with pytest.raises(McpRefused, match="allows nothing"):
        check_stdio_command("node", settings_with(stdio_allowlist=[]))


def test_tool_names_are_namespaced_and_safe_for_every_provider() -> None:
    assert tool_name("github", "create_issue") == "github__create_issue"
    assert tool_name("my server.v2", "get/thing") == "my_server_v2__get_thing"
    long = tool_name("s" * 60, "t" * 60)
    assert len(long) == 64 and long != tool_name("s" * 60, "t" * 61)
    tool = AgentTool("a__b", "does b", {"type": "object", "properties": {"x": {}}}, 1, "b")
    bare = AgentTool("a__c", "", {}, 1, "c")
    assert openai_tools([tool, bare]) == [
        {"type": "function", "function": {"name": "a__b", "description": "does b",
         "parameters": {"type": "object", "properties": {"x": {}}}}},
        {"type": "function", "function": {"name": "a__c", "description": "",
         "parameters": {"type": "object", "properties": {}}}},
    ]  # fmt: skip


def test_large_results_are_cut_to_valid_json() -> None:
    body = {
        "content": [{"type": "text", "text": "x" * 50_000}, {"type": "text", "text": "short"}],
        "structured_content": {"rows": ["y" * 100] * 500},
        "is_error": False,
    }
    text = fit(body, 4096)
    assert len(text) <= 4096
    cut = json.loads(text)
    assert cut["content"][0]["truncated"] is True and cut["content"][1]["text"] == "short"
    assert cut["structured_content"] is None and cut["structured_content_omitted"] is True
    small = {"content": [{"type": "text", "text": "ok"}], "is_error": False}
    assert json.loads(fit(small, 4096)) == small


# -- what agents see ---------------------------------------------------------------------------


async def test_agent_tools_are_namespaced_and_honour_deny(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    db = session_factory(engine)
    owner, stranger = new_id(), new_id()
    tools = [
        {"name": "add", "description": "Add.", "input_schema": {"type": "object"}},
        {"name": "rm-rf", "description": "Danger.", "input_schema": {"type": "object"}},
        {"name": "ask", "description": "Asks.", "input_schema": {"type": "object"}},
    ]
    mine = McpServer(id=new_id(), owner_id=owner, name="calc tools", transport="stdio",
                     command="x", args=[], headers={}, tool_policy={"ask": "approve"},
                     tools=tools)  # fmt: skip
    second = McpServer(id=new_id(), owner_id=owner, name="files", transport="stdio",
                       command="x", args=[], headers={}, tool_policy={"add": "deny"},
                       tools=tools[:1])  # fmt: skip
    theirs = McpServer(id=new_id(), owner_id=stranger, name="theirs", transport="stdio",
                       command="x", args=[], headers={}, tool_policy={}, tools=tools)  # fmt: skip
    never = McpServer(id=new_id(), owner_id=owner, name="never", transport="stdio",
                      command="x", args=[], headers={}, tool_policy={}, tools=None)  # fmt: skip
    agent = Agent(
        id=new_id(), owner_id=owner, name="a", system_prompt="", provider="openai", model="m",
        mcp_servers=[str(mine.id), str(theirs.id), str(second.id), str(never.id), "junk"],
        chain=[], memory={}, tool_policy={"calc_tools__rm-rf": "deny"},
    )  # fmt: skip
    async with db() as session:
        session.add_all([mine, second, theirs, never, agent])
        await session.commit()
        got = await agent_tools(session, agent)
    await engine.dispose()

    assert [(t.name, t.server_id, t.tool, t.policy) for t in got] == [
        ("calc_tools__add", mine.id, "add", "allow"),
        ("calc_tools__ask", mine.id, "ask", "approve"),
    ]
    assert got[0].description == "Add." and got[0].input_schema == {"type": "object"}


# -- the registry API --------------------------------------------------------------------------


async def test_registry_crud_is_per_user_and_never_returns_secrets(
    chatee: ChateeClient,
    other_chatee: ChateeClient,
    stack: Stack,
    demo_http: dict[str, DemoServer],
) -> None:
    body = server_body("streamable_http", demo_http)
    created = await chatee.create_mcp_server(**body)
    sid = created.id
    assert created.headers == {"Authorization": "***"}
    assert created.status == "registered" and created.tools_count is None
    assert (await chatee.mcp_server(sid)).name == body["name"]
    assert [s.id for s in await chatee.mcp_servers()] == [sid]

    stranger = Api.of(other_chatee)  # the refusals' status and content type
    for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/connect"),
                         ("GET", "/tools"), ("POST", "/tools/add/call")]:  # fmt: skip
        kwargs = {"json": body} if method == "PUT" else {}
        if path.endswith("/call"):
            kwargs = {"json": {"arguments": {}}}
        r = await stranger.request(method, f"/mcp/servers/{sid}{path}", **kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert await other_chatee.mcp_servers() == []

    # "***" keeps the stored value; connecting proves the real one is still sent
    renamed = await chatee.update_mcp_server(
        sid, name="renamed", headers={"Authorization": "***", "X-Extra": "v"}
    )
    assert renamed.name == "renamed"
    assert renamed.headers == {"Authorization": "***", "X-Extra": "***"}
    await chatee.connect_mcp_server(sid)  # the server checks the token
    # the list as it came over the wire: no secret anywhere in it
    assert DEMO_TOKEN not in json.dumps(await chatee.request("GET", "/mcp/servers"))
    assert DEMO_TOKEN not in stack.logs()

    deleted = await Api.of(chatee).request("DELETE", f"/mcp/servers/{sid}")
    assert deleted.status_code == 204, deleted.text
    for gone in (sid, "not-an-id"):
        with pytest.raises(NotFound) as missing:
            await chatee.mcp_server(gone)
        assert missing.value.status == 404


async def test_registration_is_validated_and_safety_checked(user: Api) -> None:
    cases = [
        ({"name": "x", "transport": "sse"}, 422, "url is required"),
        ({"name": "x", "transport": "stdio"}, 422, "command is required"),
        ({"name": "x", "transport": "carrier-pigeon", "url": "http://a"}, 422, "transport"),
        ({"name": "x", "transport": "sse", "url": "ftp://127.0.0.1/"}, 422, "http"),
        ({"name": " ", "transport": "stdio", "command": "node"}, 422, "blank"),
        ({"name": "x", "transport": "stdio", "command": "bash", "args": ["-c", "id"]}, 403,
         "not allowed"),
        ({"name": "x", "transport": "streamable_http", "url": "http://10.1.2.3/mcp"}, 403,
         "10.0.0.0/8"),
        ({"name": "x", "transport": "sse", "url": "http://127.0.0.1:9/sse",
          "headers": {"Bad Header": "v"}}, 422, "valid header name"),
        ({"name": "x", "transport": "sse", "url": "http://no-such-host.invalid/sse"}, 422,
         "does not resolve"),
    ]  # fmt: skip
    for body, status, detail in cases:
        r = await user.request("POST", "/mcp/servers", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert detail in r.json()["detail"], (body, r.json())


@pytest.mark.parametrize("transport", ["stdio", "sse", "streamable_http"])
async def test_connect_list_and_call_over_each_transport(
    transport: str, chatee: ChateeClient, demo_http: dict[str, DemoServer]
) -> None:
    sid = (await chatee.create_mcp_server(**server_body(transport, demo_http))).id

    listed = await chatee.mcp_tools(sid)  # never fetched: connects first
    tools = {t.name: t for t in listed}
    assert {"add", "echo", "fail", "slow", "structured"} <= set(tools)
    assert tools["add"].input_schema["required"] == ["a", "b"]
    assert tools["echo"].description == "Echo the text back."

    connected = await chatee.connect_mcp_server(sid)
    assert connected.status == "connected"
    assert connected.server_info["name"] == "chatee-demo"
    assert connected.tools_count == len(tools)
    row = await chatee.mcp_server(sid)
    assert row.tools_count == len(tools) and row.tools_refreshed_at

    added = await chatee.call_mcp_tool(sid, "add", {"a": 2, "b": 3})
    assert added.model_dump() == {  # the whole answer: nothing more, nothing less
        "content": [{"type": "text", "text": "5.0"}],
        "structured_content": {"result": 5.0},
        "is_error": False,
    }
    failed = await chatee.call_mcp_tool(sid, "fail")
    assert failed.is_error is True
    assert "failed on purpose" in failed.content[0]["text"]
    assert (await chatee.call_mcp_tool(sid, "structured")).structured_content == {
        "city": "Lisbon", "temperature": 21.5, "conditions": "sunny"
    }  # fmt: skip
    image = (await chatee.call_mcp_tool(sid, "image")).content[0]
    assert image["type"] == "image" and image["bytes"] == 16384
    assert image["data_omitted"] is True and "data" not in image and len(image["sha256"]) == 64
    with pytest.raises(NotFound) as unknown:
        await chatee.call_mcp_tool(sid, "no-such-tool")
    assert unknown.value.status == 404 and "no-such-tool" in unknown.value.detail


async def test_a_hanging_tool_times_out_clearly(
    short_chatee: ChateeClient, demo_http: dict[str, DemoServer]
) -> None:
    sid = (await short_chatee.create_mcp_server(**server_body("streamable_http", demo_http))).id
    started = time.monotonic()
    with pytest.raises(Unavailable) as timed_out:
        await short_chatee.call_mcp_tool(sid, "slow", {"seconds": 30})
    assert timed_out.value.status == 504, timed_out.value.body
    assert timed_out.value.body["type"] == "/problems/mcp-timeout"
    assert "did not answer within 2 s" in timed_out.value.detail
    assert time.monotonic() - started < 10
    assert (await short_chatee.call_mcp_tool(sid, "add", {"a": 1, "b": 1})).is_error is False


async def test_killed_server_gives_a_clear_error_and_the_next_call_reconnects(
    short_chatee: ChateeClient, tmp_path: Path
) -> None:
    server = DemoServer("streamable-http", tmp_path / "demo.log").start().wait()
    try:
        sid = (await short_chatee.create_mcp_server("flaky", "streamable_http", url=server.url)).id
        assert (await short_chatee.call_mcp_tool(sid, "add", {"a": 1, "b": 2})).is_error is False

        slow = asyncio.create_task(short_chatee.call_mcp_tool(sid, "slow", {"seconds": 1.5}))
        await asyncio.sleep(0.7)
        server.kill()
        with pytest.raises(Unavailable) as lost:
            await slow
        assert lost.value.status in (502, 504), lost.value.body
        assert "flaky" in lost.value.detail

        with pytest.raises(Unavailable) as down:  # still down
            await short_chatee.call_mcp_tool(sid, "add", {"a": 1, "b": 2})
        assert down.value.status == 502 and "cannot connect" in down.value.detail, down.value

        restarted = DemoServer("streamable-http", tmp_path / "demo2.log")
        restarted.port = server.port
        server = restarted.start().wait()
        answer: McpToolResult | ApiError | None = None
        for _ in range(21):  # the failed connect above backs off briefly
            try:
                answer = await short_chatee.call_mcp_tool(sid, "add", {"a": 20, "b": 22})
                break
            except ApiError as refused:
                answer = refused
                await asyncio.sleep(0.25)
        assert isinstance(answer, McpToolResult), answer
        assert answer.structured_content == {"result": 42.0}
    finally:
        server.kill()


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_a_rejected_token_says_http_401(
    transport: str, chatee: ChateeClient, demo_http: dict[str, DemoServer]
) -> None:
    body = server_body(transport, demo_http, headers={"Authorization": "Bearer wrong"})
    sid = (await chatee.create_mcp_server(**body)).id
    with pytest.raises(Unavailable) as refused:
        await chatee.connect_mcp_server(sid)
    assert refused.value.status == 502, refused.value.body
    assert "HTTP 401" in refused.value.detail and "wrong" not in refused.value.detail


async def test_tools_list_changed_refreshes_the_cache(chatee: ChateeClient) -> None:
    sid = (await chatee.create_mcp_server(**server_body("stdio", {}))).id
    await chatee.connect_mcp_server(sid)
    assert (await chatee.call_mcp_tool(sid, "grow", {"name": "late_tool"})).is_error is False
    for _ in range(50):  # the server's notification makes the API re-list and store the tools
        tools = await chatee.mcp_tools(sid)
        if "late_tool" in {t.name for t in tools}:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the tools cache was never refreshed: {tools}")
    late = await chatee.call_mcp_tool(sid, "late_tool")
    assert late.content == [{"type": "text", "text": "late_tool works"}]


async def test_crashing_and_silent_stdio_servers_fail_clearly_within_the_timeout(
    short_chatee: ChateeClient,
) -> None:
    crash = await short_chatee.create_mcp_server(
        "crash", "stdio", command=sys.executable, args=["-c", "raise SystemExit(3)"]
    )
    with pytest.raises(Unavailable) as crashed:
        await short_chatee.connect_mcp_server(crash.id)
    assert crashed.value.status == 502, crashed.value.body
    assert "the command exited" in crashed.value.detail

    silent = await short_chatee.create_mcp_server(
        "silent", "stdio", command=sys.executable, args=["-c", "import time; time.sleep(60)"]
    )
    started = time.monotonic()
    with pytest.raises(Unavailable) as mute:
        await short_chatee.connect_mcp_server(silent.id)
    assert mute.value.status == 504, mute.value.body
    assert "did not complete the MCP handshake within 3 s" in mute.value.detail
    assert time.monotonic() - started < 8


async def test_unreachable_server_is_a_clear_502(chatee: ChateeClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    sid = (await chatee.create_mcp_server("nobody-home", "streamable_http", url=url)).id
    with pytest.raises(Unavailable) as refused:
        await chatee.connect_mcp_server(sid)
    assert refused.value.status == 502, refused.value.body
    assert "cannot connect to MCP server 'nobody-home'" in refused.value.detail
    assert (await chatee.mcp_server(sid)).status == "error"


# -- the npm reference server ------------------------------------------------------------------


@pytest.fixture(scope="session")
def everything_server() -> Path:
    """`@modelcontextprotocol/server-everything`, installed once into `.cache/npm-mcp`."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm are not installed: the npm reference MCP server cannot run")
    entry = EVERYTHING / "dist" / "index.js"
    manifest = EVERYTHING / "package.json"
    installed = manifest.exists() and json.loads(manifest.read_text())["version"] == NPM_VERSION
    if not (installed and entry.exists()):
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["npm", "install", "--prefix", str(NPM_CACHE), "--no-audit", "--no-fund",
                 f"{NPM_PACKAGE}@{NPM_VERSION}"],
                capture_output=True, text=True, timeout=240,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {NPM_PACKAGE} timed out (offline?)")
        if done.returncode != 0 or not entry.exists():
            pytest.skip(f"npm install {NPM_PACKAGE} failed (offline?): {done.stderr[-500:]}")
    return entry


async def test_npm_reference_server_over_stdio(
    chatee: ChateeClient, everything_server: Path
) -> None:
    everything = await chatee.create_mcp_server(
        "everything", "stdio", command="node", args=[str(everything_server), "stdio"]
    )
    sid = everything.id
    connected = await chatee.connect_mcp_server(sid)
    assert connected.server_info["name"] == "mcp-servers/everything"
    names = {t.name for t in await chatee.mcp_tools(sid)}
    assert {"echo", "get-sum", "get-tiny-image"} <= names

    echoed = await chatee.call_mcp_tool(sid, "echo", {"message": "hello from chatee"})
    assert echoed.content == [{"type": "text", "text": "Echo: hello from chatee"}]
    summed = await chatee.call_mcp_tool(sid, "get-sum", {"a": 2, "b": 3})
    assert summed.is_error is False
    assert summed.content[0]["text"] == "The sum of 2 and 3 is 5."


# -- the CallMcpTool activity ------------------------------------------------------------------


@pytest.fixture
async def deps(sqlite_url: str, redis_url: str) -> AsyncIterator[Services]:
    settings = load_settings(
        database_url=sqlite_url,
        redis_url=redis_url,
        mcp={"stdio_allowlist": [sys.executable], "allow_loopback": True,
             "call_timeout_seconds": 5, "connect_timeout_seconds": 5},
    )  # fmt: skip
    made = Services.create(settings, await temporal.connect(settings, lazy=True))
    yield made
    await made.close()


async def test_call_mcp_tool_activity_stores_the_result_and_emits_events_once(
    deps: Services, redis: Redis
) -> None:
    owner, session_id, turn_id = new_id(), new_id(), new_id()
    server = McpServer(id=new_id(), owner_id=owner, name="demo", transport="stdio",
                       command=sys.executable, args=[DEMO], headers={}, tool_policy={})  # fmt: skip
    agent = Agent(id=new_id(), owner_id=owner, name="a", system_prompt="", provider="openai",
                  model="m", mcp_servers=[str(server.id)], chain=[], memory={},
                  tool_policy={})  # fmt: skip
    async with deps.sessionmaker() as db:
        db.add_all([server, agent])
        await db.commit()
    calls = [
        {"id": "call_ok", "name": "demo__add", "arguments": '{"a": 2, "b": 3}'},
        {"id": "call_bad", "name": "demo__add", "arguments": '{"a": 2,'},
        {"id": "call_fail", "name": "demo__fail", "arguments": ""},
    ]
    asked = await session_store.store_message_once(
        deps.sessionmaker, idempotency_key=f"{turn_id}:0:assistant", session_id=session_id,
        role="assistant", content="", turn_id=turn_id, tool_calls=calls,
    )  # fmt: skip

    def inp(step: int, call_id: str, tool: str, **extra: Any) -> ToolCallInput:
        return ToolCallInput(
            session_id=str(session_id), agent_id=str(agent.id), user_id=str(owner),
            turn_id=str(turn_id), step=step, assistant_message_id=str(asked.id),
            tool_call_id=call_id, server_id=str(server.id), tool=tool, **extra,
        )  # fmt: skip

    activities = ToolActivities(deps)
    env = ActivityEnvironment()
    ok = await env.run(activities.call_tool, inp(1, "call_ok", "add", start_turn=True))
    assert ok.is_error is False and ok.summary == "demo__add: 5.0"
    again = await env.run(activities.call_tool, inp(1, "call_ok", "add", start_turn=True))
    assert again.message_id == ok.message_id  # a retry stores nothing new

    bad = await env.run(activities.call_tool, inp(2, "call_bad", "add"))
    assert bad.is_error is True and "not valid JSON" in bad.summary
    failed = await env.run(activities.call_tool, inp(3, "call_fail", "fail"))
    assert failed.is_error is True and "failed on purpose" in failed.summary
    inline = await env.run(
        activities.call_tool, inp(4, f"chain-{turn_id}-4", "echo", arguments={"text": "hi"})
    )  # an AG_USE_MCP step of the chain itself: arguments inline, no assistant message
    assert inline.summary == "demo__echo: echo: hi"

    async with deps.sessionmaker() as db:
        rows = (
            await db.execute(
                select(Message).where(Message.session_id == session_id, Message.role == "tool")
            )
        ).scalars()
        stored = {m.tool_call_id: m for m in rows}
    assert set(stored) == {"call_ok", "call_bad", "call_fail", f"chain-{turn_id}-4"}
    assert str(stored["call_ok"].id) == ok.message_id
    assert stored["call_ok"].turn_id == turn_id
    assert json.loads(stored["call_ok"].content) == {
        "content": [{"type": "text", "text": "5.0"}],
        "structured_content": {"result": 5.0},
        "is_error": False,
    }
    assert json.loads(stored["call_bad"].content)["is_error"] is True

    events = await EventBus(deps.redis).read(session_id, "0-0", block_ms=100)
    names = [(e.event, e.data.get("tool_call_id")) for e in events]
    assert names[:5] == [
        ("turn.started", None),
        ("step.started", None),
        ("tool.call", "call_ok"),
        ("tool.result", "call_ok"),
        ("step.completed", None),
    ]
    assert names.count(("tool.call", "call_ok")) == 1
    assert names.count(("tool.result", "call_ok")) == 1
    call_event = next(e for e in events if e.event == "tool.call")
    assert call_event.data["arguments"] == {"a": 2, "b": 3}
    assert call_event.data["name"] == "demo__add" and call_event.data["server_id"] == str(server.id)
    result_event = next(e for e in events if e.event == "tool.result")
    assert result_event.data["is_error"] is False
    assert result_event.data["content"] == [{"type": "text", "text": "5.0"}]
    assert result_event.data["message_id"] == ok.message_id


async def test_call_mcp_tool_retries_an_unreachable_server_then_records_the_error(
    deps: Services,
) -> None:
    owner, session_id, turn_id = new_id(), new_id(), new_id()
    server = McpServer(id=new_id(), owner_id=owner, name="gone", transport="streamable_http",
                       url=f"http://127.0.0.1:{free_port()}/mcp", args=[], headers={},
                       tool_policy={})  # fmt: skip
    agent = Agent(id=new_id(), owner_id=owner, name="a", system_prompt="", provider="openai",
                  model="m", mcp_servers=[str(server.id)], chain=[], memory={},
                  tool_policy={})  # fmt: skip
    stranger = McpServer(id=new_id(), owner_id=new_id(), name="theirs", transport="stdio",
                         command=sys.executable, args=[DEMO], headers={},
                         tool_policy={})  # fmt: skip
    async with deps.sessionmaker() as db:
        db.add_all([server, agent, stranger])
        await db.commit()
    inp = ToolCallInput(
        session_id=str(session_id), agent_id=str(agent.id), user_id=str(owner),
        turn_id=str(turn_id), step=1, assistant_message_id="", tool_call_id="c1",
        server_id=str(server.id), tool="add", arguments={"a": 1, "b": 1},
    )  # fmt: skip
    activities = ToolActivities(deps)
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError, match="cannot connect") as raised:
        await env.run(activities.call_tool, inp)
    assert raised.value.type == "McpUnavailable" and not raised.value.non_retryable

    env.info = dataclasses.replace(env.info, attempt=3)  # the last attempt stores the error
    last = await env.run(activities.call_tool, inp)
    assert last.is_error is True and "cannot connect to MCP server 'gone'" in last.summary

    theirs = dataclasses.replace(inp, tool_call_id="c2", server_id=str(stranger.id))
    refused = await env.run(activities.call_tool, theirs)
    assert refused.is_error is True and "not available to this agent" in refused.summary


# -- Chatee as an MCP server -------------------------------------------------------------------


def mcp_client(stack: Stack, token: str | None, mode: str = "auto") -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(f"{stack.base}/mcp", http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agents_are_tools_of_the_mcp_endpoint(
    mode: str, chatee: ChateeClient, other_chatee: ChateeClient, stack: Stack
) -> None:
    agent = await chatee.create_agent(
        "Pirate bot!", system_prompt="You are helpful.", model="scripted"
    )
    await other_chatee.create_agent("not yours", system_prompt="You are helpful.", model="scripted")
    expected = f"Pirate_bot_{agent.id}"

    assert chatee.tokens is not None
    async with mcp_client(stack, chatee.tokens.access_token, mode) as client:
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == [expected]
        assert tools[0].input_schema["required"] == ["message"]

        first = await client.call_tool(expected, {"message": "ahoy there"})
        assert first.is_error is False, first
        assert first.content[0].text == "echo: ahoy there"
        session_id = first.structured_content["session_id"]
        assert first.structured_content["reply"] == "echo: ahoy there"

        second = await client.call_tool(expected, {"message": "again", "session_id": session_id})
        assert second.structured_content["session_id"] == session_id
        assert second.content[0].text == "echo: again"

        unknown = await client.call_tool("nope_1", {"message": "x"})
        assert unknown.is_error is True
        foreign = await client.call_tool(expected, {"message": "x", "session_id": "123"})
        assert foreign.is_error is True and "session not found" in foreign.content[0].text

    messages = await stored_messages(chatee, session_id)
    assert [m.content for m in reversed(messages)] == [
        "ahoy there", "echo: ahoy there", "again", "echo: again"
    ]  # fmt: skip


async def test_mcp_endpoint_needs_a_valid_token(stack: Stack) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=stack.base) as http:
        r = await http.post("/mcp", json=init, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["content-type"] == "application/problem+json"
        bad = {**headers, "Authorization": "Bearer not-a-jwt"}
        assert (await http.post("/mcp", json=init, headers=bad)).status_code == 401
    with pytest.raises(ExceptionGroup) as refused:  # how the SDK client surfaces an HTTP 401
        async with mcp_client(stack, None) as client:
            await client.list_tools()
    assert refused.group_contains(MCPError, depth=None)


# -- an agent turn that uses a tool, end to end --------------------------------------------------


async def test_an_agent_turn_calls_an_mcp_tool_through_the_worker(
    chatee: ChateeClient, llm: LLMServerThread
) -> None:
    server = await connected_server(chatee)
    denied = tool_name(server.name, "fail")
    session = await new_session(chatee, mcp_servers=[server.id], tool_policy={denied: "deny"})
    marker = uuid.uuid4().hex
    add = tool_name(server.name, "add")
    llm.llm.script(
        marker,
        [
            {"tool_calls": [{"id": "call_add", "name": add, "arguments": {"a": 2, "b": 40}}]},
            "The answer is 42.",
        ],
    )

    events = await turn_events(chatee, session.id, f"what is 2 + 40? {marker}")

    tool_call = next(e for e in events if isinstance(e, ToolCall))
    assert tool_call.name == add
    assert tool_call.arguments == {"a": 2, "b": 40}
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error is False
    assert result.content == [{"type": "text", "text": "42.0"}]
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "The answer is 42."

    sent = [r["body"] for r in llm.llm.requests if r["script"] == marker]
    offered = {t["function"]["name"] for t in sent[0]["tools"]}
    assert add in offered and denied not in offered
    tool_reply = next(m for m in sent[1]["messages"] if m["role"] == "tool")
    assert tool_reply["tool_call_id"] == "call_add"
    assert json.loads(tool_reply["content"])["structured_content"] == {"result": 42.0}


# -- AG_USE_MCP as a chain step, and tool policies -----------------------------------------------


async def connected_server(chatee: ChateeClient) -> ChateeMcpServer:
    """The stdio demo server, registered and connected (its tools are known)."""
    server = await chatee.create_mcp_server(**server_body("stdio", {}))
    await chatee.connect_mcp_server(server.id)
    return server


async def test_a_chain_step_calls_a_tool_and_the_model_reads_the_result(
    chatee: ChateeClient, llm: LLMServerThread
) -> None:
    server = await connected_server(chatee)
    chain = [
        {"type": "AG_USE_MCP", "server_id": server.id, "tool": "add",
         "arguments": {"a": 20, "b": 22}},
        "AG_SELF_GEN",
    ]  # fmt: skip
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, f"add them {marker}")
    assert next(e for e in events if isinstance(e, ToolCall)).arguments == {"a": 20, "b": 22}
    assert next(e for e in events if isinstance(e, ToolResult)).is_error is False
    assert isinstance(events[-1], TurnCompleted)
    sent = [r["body"] for r in llm.llm.requests if r["script"] is None and marker in str(r)]
    notes = [m["content"] for m in sent[-1]["messages"] if m["role"] == "system"]
    assert any(n.startswith("Tool result:") and "42" in n for n in notes)


@pytest.mark.parametrize(("answer", "ran"), [("yes, go ahead", True), ("no", False)])
async def test_approve_policy_asks_a_human_before_the_tool_runs(
    chatee: ChateeClient, llm: LLMServerThread, answer: str, ran: bool
) -> None:
    server = await connected_server(chatee)
    add = tool_name(server.name, "add")
    session = await new_session(chatee, mcp_servers=[server.id], tool_policy={add: "approve"})
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [{"tool_calls": [{"id": "call_1", "name": add, "arguments": {"a": 1, "b": 1}}]}, "Done."],
    )
    turn = asyncio.create_task(turn_events(chatee, session.id, f"add {marker}"))
    request = (await follow_until(chatee, session.id, "human.request"))[-1]
    assert isinstance(request, HumanRequest)
    assert add in request.prompt
    await chatee.human_reply(session.id, request.request_id, answer)
    events = await asyncio.wait_for(turn, 30)
    assert isinstance(events[-1], TurnCompleted)
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error is (not ran)
    assert any(isinstance(e, ToolCall) for e in events) is ran


async def test_a_tool_the_agent_does_not_have_gets_an_error_result(
    chatee: ChateeClient, llm: LLMServerThread
) -> None:
    session = await new_session(chatee)
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [{"tool_calls": [{"id": "call_x", "name": "made_up", "arguments": {}}]}, "Sorry."],
    )
    events = await turn_events(chatee, session.id, marker)
    assert isinstance(events[-1], TurnCompleted)
    assert events[-1].content == "Sorry."
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.is_error and "no tool named made_up" in result.content[0]["text"]
    sent = [r["body"] for r in llm.llm.requests if r["script"] == marker]
    tool_reply = next(m for m in sent[1]["messages"] if m["role"] == "tool")
    assert tool_reply["tool_call_id"] == "call_x"
