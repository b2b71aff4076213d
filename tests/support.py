"""Helpers for tests that run real `chatee` processes and talk to them.

A test talks to the API as a user would, through the SDK (`chatee.client.Client`): `signed_up`,
`new_session`, `turn_events`, `follow_until`. `Api` (raw httpx, tests/wire.py) is for the
tests whose subject is the wire itself: status codes, headers, problem+json bodies. The process
launchers live in `chatee.devtools` (the benchmarks use them too) and are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chatee.client import Agent, Client, Session, SessionMessage, TurnEvent
from chatee.devtools.llm_server import LLMServerThread
from chatee.devtools.processes import ChateeProcess, Stack, wait_http, wait_log
from tests.wire import Api

__all__ = [
    "Api",
    "ChateeProcess",
    "Stack",
    "PASSWORD",
    "access_token",
    "completes",
    "event_names",
    "follow_until",
    "killable_turn",
    "new_agent",
    "new_session",
    "signed_up",
    "stored_messages",
    "turn_events",
    "wait_http",
    "wait_log",
    "WHOLE_ANSWER",
]

WHOLE_ANSWER = "the whole answer"  # what a turn answers once its killed worker's step reruns
PASSWORD = "correct horse"


async def signed_up(base_url: str, **client_args: Any) -> Client:
    """A new person, registered and signed in through the SDK (close it, or `async with`)."""
    client = Client(base_url, **client_args)
    await client.register(f"user-{uuid.uuid4().hex[:12]}", PASSWORD)
    return client


def access_token(client: Client) -> str:
    """The login's bearer token: the OpenAI surface's API key, a raw WebSocket's `token`."""
    assert client.tokens is not None
    return client.tokens.access_token


async def new_agent(client: Client, **fields: Any) -> Agent:
    """An agent on the scripted model; `fields` as `POST /agents` takes them."""
    defaults = {"name": "helper", "system_prompt": "You are helpful.", "model": "scripted"}
    return await client.create_agent(**{**defaults, **fields})


async def new_session(client: Client, **agent_fields: Any) -> Session:
    """A session of a new agent (`new_agent`)."""
    agent = await new_agent(client, **agent_fields)
    return await client.create_session(agent.id)


async def turn_events(
    client: Client, session_id: str, content: str, **args: Any
) -> list[TurnEvent]:
    """Every event of one turn, sent and streamed by `Client.stream_turn`."""
    return [event async for event in client.stream_turn(session_id, content, **args)]


async def follow_until(
    client: Client,
    session_id: str,
    until: str | Callable[[TurnEvent], bool],
    after: str | None = "0",
) -> list[TurnEvent]:
    """The session's events (from the start of what it retains, or after stream id `after`;
    None: from now) up to the first named `until`, or matching it."""
    done = until if callable(until) else (lambda e: e.event == until)
    events = []
    async for event in client.follow(session_id, after=after):
        events.append(event)
        if done(event):
            break
    return events


def event_names(events: list[TurnEvent]) -> list[str]:
    return [e.event for e in events]


def completes(turn_id: str) -> Callable[[TurnEvent], bool]:
    """An `until` for `follow_until`: the end of that turn."""
    return lambda e: e.event in ("turn.completed", "turn.failed") and e.turn_id == turn_id


async def stored_messages(client: Client, session_id: str) -> list[SessionMessage]:
    """The session's stored messages, newest first."""
    return (await client.session_messages(session_id, limit=200)).items


def killable_turn(
    isolated_stacks: Callable[[dict[str, str]], Stack], llm: LLMServerThread
) -> tuple[Stack, ChateeProcess, str]:
    """A stack whose worker a test is about to SIGKILL mid-turn: (the stack, that worker, the
    marker of the turn). A message containing the marker streams `part0 `… `part39 ` slowly
    (kill on `part2 `); the step's retry on a new worker answers `WHOLE_ANSWER`."""
    stack = isolated_stacks({"CHATEE_TEMPORAL__LLM_HEARTBEAT_SECONDS": "2"})
    worker = stack.start_worker()
    stack.start_api()
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker,
        [
            {"chunks": [f"part{i} " for i in range(40)], "chunk_delay_ms": 200},
            {"text": WHOLE_ANSWER},
        ],
    )
    return stack, worker, marker
