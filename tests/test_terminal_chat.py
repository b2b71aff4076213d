"""The terminal chat (`chatee login`, `chatee agents`, `chatee chat`) driven through a
pseudo-terminal, as a person types, against the shared stack."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import uuid
from pathlib import Path

import pexpect
import pytest

from chatee.client import Client, Tokens, Unauthorized
from chatee.devtools.llm_server import LLMServerThread
from chatee.mcp import tool_name
from tests.support import Stack

PASSWORD = "correct horse"
DEMO = str(Path(__file__).resolve().parents[1] / "chatee" / "devtools" / "mcp_demo.py")


def chatee(config: Path, *args: str) -> pexpect.spawn:
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "COLUMNS": "120"}
    env.pop("CHATEE_PASSWORD", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "chatee.cli", *args], env=env, encoding="utf-8", timeout=120
    )
    child.logfile_read = io.StringIO()  # the whole transcript, for asserts and failures
    return child


def transcript(child: pexpect.spawn) -> str:
    return child.logfile_read.getvalue()


def finished(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


@pytest.fixture
async def account(stack: Stack, tmp_path: Path) -> tuple[str, Path]:
    """A user with two agents, signed in through `chatee login`; their config directory."""
    name = f"term-{uuid.uuid4().hex[:10]}"
    async with Client(stack.base) as sdk:
        await sdk.register(name, PASSWORD)
        await sdk.create_agent("helper", model="scripted")
        ask = [{"type": "AG_CALL_HUMAN", "prompt": "Which table?"}, "AG_SELF_GEN"]
        await sdk.create_agent("booker", model="scripted", chain=ask)

    login = chatee(tmp_path, "login", "--server", stack.base)
    login.expect("Username: ")
    login.sendline(name)
    login.expect("Password: ")
    login.sendline(PASSWORD)
    login.expect(f"signed in to {stack.base} as {name}")
    assert finished(login) == 0
    return name, tmp_path


def test_login_keeps_the_tokens_readable_by_the_owner_only(
    account: tuple[str, Path], stack: Stack
) -> None:
    name, config = account
    saved = config / "chatee" / "client.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    body = json.loads(saved.read_text())
    assert body["server"] == stack.base and body["username"] == name
    assert body["tokens"]["access_token"] and body["tokens"]["refresh_token"]

    wrong = chatee(config, "login", "--server", stack.base, "--username", name)
    wrong.expect("Password: ")
    wrong.sendline("not the password")
    wrong.expect("wrong username or password")
    assert finished(wrong) == 1


async def test_logout_ends_the_login_on_the_server_and_here(
    account: tuple[str, Path], stack: Stack
) -> None:
    _, config = account
    saved = json.loads((config / "chatee" / "client.json").read_text())["tokens"]
    out = chatee(config, "logout")
    out.expect_exact("signed out")
    assert finished(out) == 0
    assert not (config / "chatee" / "client.json").exists()

    after = chatee(config, "agents")
    after.expect_exact("not signed in: run `chatee login` first")
    assert finished(after) == 1
    async with Client(stack.base, tokens=Tokens(**saved)) as sdk:
        with pytest.raises(Unauthorized):  # the saved tokens, copied away, are worthless too
            await sdk.agents()


def test_agents_are_listed(account: tuple[str, Path]) -> None:
    _, config = account
    listing = chatee(config, "agents")
    listing.expect(pexpect.EOF)
    names = [line.split()[0] for line in listing.before.splitlines() if line.strip()]
    assert sorted(names) == ["booker", "helper"]


def test_a_reply_streams_in_and_ctrl_d_leaves(account: tuple[str, Path]) -> None:
    _, config = account
    child = chatee(config, "chat", "helper")
    child.expect("Chatting with helper")
    child.expect_exact("you> ")
    child.sendline("hello there")
    child.expect_exact("step 0: AG_SELF_GEN")
    child.expect_exact("helper> echo: hello there")
    child.expect_exact("you> ")
    child.sendeof()
    assert finished(child) == 0


def test_a_human_request_is_answered_inline(account: tuple[str, Path]) -> None:
    _, config = account
    child = chatee(config, "chat", "booker")
    child.expect_exact("you> ")
    child.sendline("book dinner")
    child.expect_exact("? Which table?")
    child.expect_exact("answer> ")
    child.sendline("by the window")
    child.expect_exact("booker> echo: by the window")
    child.expect_exact("you> ")
    child.sendline("/quit")
    assert finished(child) == 0


async def test_tool_calls_and_their_results_are_shown(
    account: tuple[str, Path], stack: Stack, llm: LLMServerThread
) -> None:
    name, config = account
    async with Client(stack.base) as sdk:
        await sdk.login(name, PASSWORD)
        body = {"name": "demo", "transport": "stdio", "command": sys.executable, "args": [DEMO]}
        server = await sdk.request("POST", "/mcp/servers", json=body)
        await sdk.create_agent("calc", model="scripted", mcp_servers=[server["id"]])
    marker = uuid.uuid4().hex
    call = {"id": "call_add", "name": tool_name("demo", "add"), "arguments": {"a": 2, "b": 3}}
    llm.llm.script(marker, [{"tool_calls": [call]}, "2 + 3 = 5."])

    child = chatee(config, "chat", "calc")
    child.expect_exact("you> ")
    child.sendline(f"what is 2+3? {marker}")
    child.expect_exact('⚙ demo__add({"a": 2, "b": 3})')
    child.expect_exact("→ 5.0")
    child.expect_exact("calc> 2 + 3 = 5.")
    child.expect_exact("you> ")
    child.sendline("/quit")
    assert finished(child) == 0


def test_ctrl_c_cancels_the_running_turn_and_the_chat_goes_on(
    account: tuple[str, Path], llm: LLMServerThread
) -> None:
    _, config = account
    marker = uuid.uuid4().hex
    chunks = [f"word{i} " for i in range(100)]
    llm.llm.script(marker, [{"chunks": chunks, "chunk_delay_ms": 200}])
    child = chatee(config, "chat", "helper")
    child.expect_exact("you> ")
    child.sendline(marker)
    child.expect_exact("helper> word0 word1")
    child.sendintr()  # Ctrl-C
    child.expect_exact("[cancelling…]")
    child.expect_exact("[turn cancelled]")
    child.expect_exact("you> ")
    child.sendline("still here?")
    child.expect_exact("helper> echo: still here?")
    child.expect_exact("you> ")
    child.sendline("/quit")
    assert finished(child) == 0
    assert "word99" not in transcript(child)  # the reply stopped where it was cancelled
