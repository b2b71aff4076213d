"""Run Temporal workers for any subset of Chatee's task queues in one process.

`chatee worker` serves every queue; `chatee worker --queue llm --queue tools` serves some.
Scale a queue by running more processes that serve it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import Deps
from activities.fanout import FanoutActivities
from activities.llm import LLMActivities
from activities.mcp import ToolActivities
from activities.messages import MessageActivities
from activities.rag import RagActivities
from chatee import temporal
from chatee.config import Settings
from chatee.logging import get_logger
from chatee.nodes import NodeLease
from workflows.agent_session import AgentSession
from workflows.agent_task import AgentTask
from workflows.fanout import AgentReplyRelay, MessageFanout
from workflows.types import AGENTS_QUEUE, LLM_QUEUE, MESSAGES_QUEUE, RAG_QUEUE, TOOLS_QUEUE

log = get_logger(__name__)

QUEUES: dict[str, str] = {
    "agents": AGENTS_QUEUE,
    "llm": LLM_QUEUE,
    "tools": TOOLS_QUEUE,
    "rag": RAG_QUEUE,
    "messages": MESSAGES_QUEUE,
}


def _registrations(deps: Deps) -> dict[str, dict[str, list[Any]]]:
    """What each queue runs: workflows on `agents` (plus the local activity they use to
    publish workflow-side events), activities on the rest."""
    llm = LLMActivities(deps)
    messages = MessageActivities(deps)
    rag = RagActivities(deps)
    tools = ToolActivities(deps)
    fanout = FanoutActivities(deps)
    return {
        "agents": {
            "workflows": [AgentSession, AgentTask],
            "activities": [messages.publish_turn_event],
        },
        "llm": {"workflows": [], "activities": [llm.generate, llm.decide]},
        "tools": {"workflows": [], "activities": [tools.call_tool]},
        "rag": {
            "workflows": [],
            "activities": [rag.retrieve, rag.load_memory, rag.store_memory],
        },
        "messages": {
            # fan-out and agent-relay workflows run where their activities do
            "workflows": [MessageFanout, AgentReplyRelay],
            "activities": [
                fanout.plan,
                fanout.deliver_batch,
                fanout.finish,
                fanout.relay,
                fanout.post_reply,
                messages.publish_turn_event,
                messages.finish_turn,
                messages.store_reply,
                messages.store_tool_result,
                messages.record_human_reply,
                messages.prepare_agent_task,
            ],
        },
    }


def build_workers(client: Client, deps: Deps, queues: list[str]) -> list[Worker]:
    registrations = _registrations(deps)
    workers = []
    for name in queues:
        reg = registrations[name]
        if not reg["workflows"] and not reg["activities"]:
            log.info("queue has nothing to run yet", queue=QUEUES[name])
            continue
        workers.append(
            Worker(
                client,
                task_queue=QUEUES[name],
                workflows=reg["workflows"],
                activities=reg["activities"],
                max_concurrent_activities=200,
                max_concurrent_workflow_tasks=200,
                graceful_shutdown_timeout=timedelta(seconds=10),
            )
        )
    return workers


async def run_workers(
    settings: Settings, queues: list[str], ready: Callable[[], None] | None = None
) -> None:
    client = await temporal.connect(settings)
    await temporal.ensure_search_attributes(client)
    deps = Deps.create(settings)
    lease = None
    if "node_id" not in settings.model_fields_set:
        lease = NodeLease(deps.redis)
        await lease.acquire()
    workers = build_workers(client, deps, queues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("workers started", queues=[QUEUES[q] for q in queues])
    if ready:
        ready()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    log.info("workers stopping")
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    if lease:
        await lease.release()
    await deps.close()
