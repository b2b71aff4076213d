"""The terminal chat behind `chatee login`, `chatee agents` and `chatee chat`, on the SDK.

The login (server URL and tokens) lives in `$XDG_CONFIG_HOME/chatee/client.json`
(`~/.config/chatee/client.json`), readable by its owner only; every refresh rewrites it, since
a refresh token works once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from chatee.client.client import Client
from chatee.client.errors import ApiError, ChateeClientError, Unauthorized
from chatee.client.events import (
    HumanRequest,
    MessageDelta,
    StepRetry,
    StepStarted,
    ToolCall,
    ToolResult,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from chatee.client.models import Tokens

PROMPT = "you> "


class Failed(Exception):
    """A message for the user; the command exits with status 1."""


# -- the saved login ------------------------------------------------------------------------------


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "chatee" / "client.json"


@dataclass
class Profile:
    server: str
    username: str
    tokens: Tokens | None

    @classmethod
    def load(cls) -> Profile:
        path = config_path()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise Failed("not signed in: run `chatee login` first") from None
        except (OSError, ValueError) as exc:
            raise Failed(f"cannot read {path}: {exc}") from None
        tokens = Tokens(**raw["tokens"]) if raw.get("tokens") else None
        return cls(raw["server"], raw.get("username", ""), tokens)

    def save(self) -> None:
        """Written whole to a new file that only its owner can read, then moved into place."""
        path = config_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {
            "server": self.server,
            "username": self.username,
            "tokens": asdict(self.tokens) if self.tokens else None,
        }
        partial = path.with_suffix(".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=2)
        os.replace(partial, path)

    def client(self) -> Client:
        def keep(tokens: Tokens | None) -> None:
            self.tokens = tokens
            self.save()

        return Client(self.server, tokens=self.tokens, on_tokens=keep)


@contextlib.contextmanager
def explained() -> Iterator[None]:
    """SDK and network errors as one line for a person."""
    try:
        yield
    except Unauthorized as exc:
        raise Failed(f"{exc.detail} (run `chatee login` to sign in again)") from None
    except ApiError as exc:
        raise Failed(f"{exc.detail} ({exc.status} {exc.code})") from None
    except httpx.TransportError as exc:
        raise Failed(f"cannot reach the server: {exc}") from None
    except ChateeClientError as exc:
        raise Failed(str(exc)) from None


# -- commands -------------------------------------------------------------------------------------


def login(server: str, username: str, password: str, register: bool = False) -> str:
    async def sign_in() -> Tokens:
        async with Client(server) as client:
            if register:
                return await client.register(username, password)
            return await client.login(username, password)

    with explained():
        tokens = asyncio.run(sign_in())
    Profile(server.rstrip("/").removesuffix("/api/v1"), username.lower(), tokens).save()
    return f"signed in to {server} as {username.lower()} (saved in {config_path()})"


def logout() -> str:
    profile = Profile.load()

    async def end() -> None:
        async with profile.client() as client:
            with contextlib.suppress(ApiError, httpx.TransportError):
                await client.logout()

    asyncio.run(end())
    config_path().unlink(missing_ok=True)
    return "signed out"


def list_agents(out: TextIO = sys.stdout) -> None:
    profile = Profile.load()

    async def fetch() -> list[Any]:
        async with profile.client() as client:
            return await client.agents()

    with explained():
        agents = asyncio.run(fetch())
    if not agents:
        out.write("no agents yet (create one with POST /api/v1/agents or the web app)\n")
    for agent in agents:
        out.write(f"{agent.name:<24} {agent.model or '':<20} {agent.id}\n")


def chat(agent_ref: str, session_id: str | None = None, out: TextIO = sys.stdout) -> None:
    """A line-by-line chat with one agent, in a new session (or `session_id`)."""
    profile = Profile.load()
    with asyncio.Runner() as runner:
        client = profile.client()
        try:
            with explained():
                agent = runner.run(client.find_agent(agent_ref))
                if session_id is None:
                    session_id = runner.run(client.create_session(agent.id, "terminal")).id
                else:
                    runner.run(client.session(session_id))
            out.write(
                f"Chatting with {agent.name} (session {session_id}). "
                "Ctrl-C cancels a reply; Ctrl-D or /quit leaves.\n"
            )
            view = TurnView(agent.name, out)
            while True:
                out.flush()
                try:
                    line = input(PROMPT).strip()
                except EOFError:
                    out.write("\n")
                    return
                except KeyboardInterrupt:
                    out.write("\n(Ctrl-D or /quit leaves)\n")
                    continue
                if line in ("/quit", "/exit"):
                    return
                if not line:
                    continue
                try:
                    with explained():
                        runner.run(run_turn(client, session_id, line, view))
                except Failed as exc:
                    view.note(str(exc))
                except KeyboardInterrupt:  # a Ctrl-C that came before the turn's handler
                    view.note("interrupted")
        finally:
            runner.run(client.aclose())


# -- one turn -------------------------------------------------------------------------------------


async def run_turn(client: Client, session_id: str, text: str, view: TurnView) -> None:
    """Stream the reply; Ctrl-C (SIGINT) asks the server to cancel the turn, whose
    `turn.failed` then ends the stream; a human request is answered from the keyboard."""
    loop = asyncio.get_running_loop()
    turn = client.stream_turn(session_id, text)
    cancel: asyncio.Task[Any] | None = None

    def interrupted() -> None:
        nonlocal cancel
        if cancel is None:
            view.note("cancelling…")
            cancel = loop.create_task(client.cancel(session_id, turn.turn_id))

    with _on_sigint(loop, interrupted):
        async for event in turn:
            view.show(event)
            if isinstance(event, HumanRequest) and cancel is None:
                try:
                    answer = await asyncio.to_thread(input, "answer> ")
                except EOFError:  # Ctrl-D instead of an answer: give up on the turn
                    interrupted()
                    continue
                if cancel is not None:  # Ctrl-C while the question waited
                    continue
                try:
                    await client.human_reply(session_id, event.request_id, answer or "(no answer)")
                except ApiError as exc:
                    view.note(f"the answer was not taken: {exc.detail}")
    if cancel is not None:
        with contextlib.suppress(ApiError, httpx.TransportError):
            await cancel


@contextlib.contextmanager
def _on_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Iterator[None]:
    loop.add_signal_handler(signal.SIGINT, handler)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt


class TurnView:
    """Writes a turn's events as lines a person reads: the reply as it streams, a line per
    step, tool call and result, a retried step's note, and how the turn ended."""

    def __init__(self, agent_name: str, out: TextIO) -> None:
        self.agent_name = agent_name
        self.out = out
        self.in_reply = False  # inside a line of streamed reply text

    def note(self, text: str) -> None:
        self._line(f"[{text}]")

    def show(self, event: TurnEvent) -> None:
        if isinstance(event, MessageDelta):
            if not self.in_reply:
                self.out.write(f"{self.agent_name}> ")
                self.in_reply = True
            self.out.write(event.text)
        elif isinstance(event, StepStarted):
            self._line(f"  · step {event.step}: {event.action}")
        elif isinstance(event, ToolCall):
            self._line(f"  ⚙ {event.name}({_short(json.dumps(event.arguments))})")
        elif isinstance(event, ToolResult):
            shown = " ".join(str(c.get("text", c)) for c in event.content if isinstance(c, dict))
            self._line(f"  {'✗' if event.is_error else '→'} {_short(shown)}")
        elif isinstance(event, StepRetry):
            self.note(f"step {event.step} runs again ({event.reason}); discard the text above")
        elif isinstance(event, HumanRequest):
            self._line(f"? {event.prompt}")
        elif isinstance(event, TurnCompleted):
            if not self.in_reply and event.content:
                self._line(f"{self.agent_name}> {event.content}")
            self._end()
        elif isinstance(event, TurnFailed):
            if event.error_type == "cancelled":
                self.note("turn cancelled")
            else:
                self.note(f"turn failed: {event.error_type}: {event.error_message}")
        self.out.flush()

    def _line(self, text: str) -> None:
        self._end()
        self.out.write(text + "\n")

    def _end(self) -> None:
        if self.in_reply:
            self.out.write("\n")
            self.in_reply = False


def _short(text: str, most: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"
