"""Workflow histories: bounded however long a session runs (claim-check + continue-as-new),
and replayable against the current workflow code (recorded ones and this run's)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from chatee.client import Client as ChateeClient
from chatee.client import StepStarted, TurnCompleted
from chatee.devtools.llm_server import LLMServerThread
from tests.support import completes, follow_until, new_session, turn_events
from workflows.agent_session import AgentSession
from workflows.agent_task import AgentTask

HISTORIES = Path(__file__).parent / "histories"
MAX_EVENTS_PER_RUN = 1500
MAX_BYTES_PER_RUN = 512 * 1024


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    runs = []
    for _ in range(50):  # visibility is eventually consistent
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        if runs:
            break
        await asyncio.sleep(0.1)
    return [
        await client.get_workflow_handle(workflow_id, run_id=w.run_id).fetch_history() for w in runs
    ]


async def test_a_500_turn_session_keeps_every_run_small(
    chatee: ChateeClient, temporal_client: Client
) -> None:
    session = await new_session(chatee)
    body = "x" * 4000  # bodies stay in the message store, never in history
    turn_ids: list[str] = []
    for batch in range(50):  # ten messages at a time, as a busy conversation would send them
        for i in range(10):
            accepted = await chatee.send(session.id, f"{batch}.{i} {body}")
            turn_ids.append(accepted.turn_id)
        async with asyncio.timeout(60):
            await follow_until(chatee, session.id, completes(turn_ids[-1]))
    events = await follow_until(chatee, session.id, completes(turn_ids[-1]))
    completed = [e.turn_id for e in events if isinstance(e, TurnCompleted)]
    assert completed == turn_ids

    histories = await runs_of(temporal_client, session.workflow_id)
    sizes = [(len(h.events), sum(e.ByteSize() for e in h.events)) for h in histories]
    print(f"500-turn session: {len(sizes)} runs, (events, bytes) per run: {sizes}")
    assert len(histories) >= 5  # continued as new every 100 turns
    assert max(n for n, _ in sizes) <= MAX_EVENTS_PER_RUN
    assert max(b for _, b in sizes) <= MAX_BYTES_PER_RUN
    assert all(body not in h.to_json() for h in histories)


async def test_histories_replay_against_the_current_code(
    chatee: ChateeClient, llm: LLMServerThread, temporal_client: Client
) -> None:
    """Runs a session through most action types, then replays its history and every
    recorded one. Set CHATEE_RECORD_HISTORIES=1 to record this run's into tests/histories."""
    expert = await chatee.create_agent(
        "expert",
        system_prompt="You are helpful.",
        model="scripted",
        chain=[{"type": "AG_ACCEPT", "text": "42"}],
    )
    chain = [
        "AG_MEMORY_LOAD",
        "AG_RAG",
        {"type": "AG_SELF_DECIDE", "options": ["ask", "answer"],
         "branches": {"ask": [{"type": "AG_CALL_AG", "agent_id": expert.id}]}},
        "AG_SELF_GEN",
        {"type": "AG_MEMORY_STORE", "key": "topic", "value": "answers"},
    ]  # fmt: skip
    session = await new_session(chatee, chain=chain)
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"json": {"choice": "ask"}}, {"text": "It is 42."}])
    events = await turn_events(chatee, session.id, f"what is the answer? {marker}")
    assert isinstance(events[-1], TurnCompleted)
    llm.llm.script(f"thanks {marker}", [{"json": {"choice": "answer"}}])
    events2 = await turn_events(chatee, session.id, f"thanks {marker}")
    assert isinstance(events2[-1], TurnCompleted)
    await chatee.close_session(session.id)

    live = await runs_of(temporal_client, session.workflow_id)
    call = next(e for e in events if isinstance(e, StepStarted) and e.action == "AG_CALL_AG")
    live += await runs_of(temporal_client, f"task-{call.turn_id}-{call.step}")
    assert {h.workflow_id.split("-")[0] for h in live} == {"session", "task"}
    if os.environ.get("CHATEE_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        for h in live:
            name = h.workflow_id.split("-")[0]
            (HISTORIES / f"{name}.json").write_text(h.to_json())
    recorded = [
        WorkflowHistory.from_json(p.stem, json.loads(p.read_text()))
        for p in sorted(HISTORIES.glob("*.json"))
    ]
    if not recorded:
        pytest.fail("no recorded histories in tests/histories")
    replayer = Replayer(workflows=[AgentSession, AgentTask])

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for history in live + recorded:
            yield history

    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    failures = {wid: str(err) for wid, err in results.replay_failures.items()}
    assert failures == {}
