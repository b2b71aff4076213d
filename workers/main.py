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

from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client
from temporalio.common import VersioningBehavior
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkerDeploymentConfig, WorkerDeploymentVersion

from activities.a2a_call import RemoteAgentActivities
from activities.conversation_agents import ConversationAgentActivities
from activities.fanout import FanoutActivities
from activities.ingest import IngestActivities
from activities.llm import LLMActivities
from activities.mcp import ToolActivities
from activities.messages import MessageActivities
from activities.rag import RagActivities
from chatee import metrics, temporal
from chatee.config import ConfigError, QueueConcurrency, Settings
from chatee.logging import get_logger
from chatee.nodes import NodeLease
from chatee.services import Services
from chatee.tracing import setup_tracing, shutdown_tracing
from workers.interceptors import ObserveActivities
from workflows.agent_session import AgentSession
from workflows.agent_task import AgentTask
from workflows.conversation_agents import ConversationAgentTurns
from workflows.fanout import AgentReplyRelay, MessageFanout
from workflows.ingest import IngestDocument
from workflows.names import QUEUES

log = get_logger(__name__)


def _registrations(services: Services) -> dict[str, dict[str, list[Any]]]:
    """What each queue runs: workflows on `agents` (plus the local activity they use to
    publish workflow-side events), activities on the rest."""
    llm = LLMActivities(services)
    messages = MessageActivities(services)
    rag = RagActivities(services)
    tools = ToolActivities(services)
    remote = RemoteAgentActivities(services)
    fanout = FanoutActivities(services)
    conversation_agents = ConversationAgentActivities(services)
    ingest = IngestActivities(services)
    return {
        "agents": {
            "workflows": [AgentSession, AgentTask],
            "activities": [messages.publish_turn_event],
        },
        "llm": {"workflows": [], "activities": [llm.generate, llm.decide]},
        "tools": {"workflows": [], "activities": [tools.call_tool, remote.call]},
        "rag": {
            # document ingestion runs where its activities do
            "workflows": [IngestDocument],
            "activities": [
                rag.retrieve,
                rag.load_memory,
                rag.store_memory,
                ingest.prepare,
                ingest.embed,
                ingest.finish,
            ],
        },
        "messages": {
            # fan-out and agent-relay workflows run where their activities do
            "workflows": [MessageFanout, AgentReplyRelay, ConversationAgentTurns],
            "activities": [
                fanout.plan,
                fanout.deliver_batch,
                fanout.finish,
                fanout.relay,
                fanout.post_reply,
                conversation_agents.prepare,
                conversation_agents.offer,
                conversation_agents.follow,
                conversation_agents.post,
                messages.publish_turn_event,
                messages.finish_turn,
                messages.store_reply,
                messages.store_tool_result,
                messages.record_human_reply,
                messages.prepare_agent_task,
            ],
        },
    }


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Deployment versioning when `workers.deployment_name` is set: this process is
    version `build_id` of that deployment, and sessions follow the deployment's current
    version on their next workflow task (AUTO_UPGRADE; changed workflow code stays replayable
    behind `workflow.patched`)."""
    knobs = settings.workers
    if not knobs.deployment_name:
        return None
    if not knobs.build_id:
        raise ConfigError(
            "workers.build_id (CHATEE_WORKERS__BUILD_ID) must be set with workers.deployment_name"
        )
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(knobs.deployment_name, knobs.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


def build_workers(client: Client, services: Services, queues: list[str]) -> list[Worker]:
    settings = services.settings
    registrations = _registrations(services)
    deployment = deployment_config(settings)
    workers = []
    for name in queues:
        reg = registrations[name]
        if not reg["workflows"] and not reg["activities"]:
            log.info("queue has nothing to run yet", queue=QUEUES[name])
            continue
        limits: QueueConcurrency = getattr(settings.workers, name)
        workers.append(
            Worker(
                client,
                task_queue=QUEUES[name],
                workflows=reg["workflows"],
                activities=reg["activities"],
                interceptors=[ObserveActivities()],  # tracing comes with the client
                max_concurrent_activities=limits.max_concurrent_activities,
                max_concurrent_workflow_tasks=limits.max_concurrent_workflow_tasks,
                max_activities_per_second=limits.max_activities_per_second,
                max_task_queue_activities_per_second=limits.max_task_queue_activities_per_second,
                graceful_shutdown_timeout=timedelta(
                    seconds=settings.workers.graceful_shutdown_seconds
                ),
                deployment_config=deployment,
            )
        )
    return workers


async def promote(client: Client, settings: Settings, within_seconds: float = 60) -> None:
    """Make this build the deployment's current version, once the server has seen its
    pollers (retried until then)."""
    knobs = settings.workers
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=knobs.deployment_name,
        build_id=knobs.build_id,
        identity=client.identity,
    )
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
        except RPCError as exc:
            if asyncio.get_running_loop().time() > deadline:
                log.error("could not make this build current", error=exc.message)
                return
            await asyncio.sleep(0.5)
            continue
        log.info("build is current", deployment=knobs.deployment_name, build_id=knobs.build_id)
        return


def _runtime(settings: Settings) -> Runtime | None:
    """Temporal SDK metrics (poll latency, slots, schedule-to-start…) on their own port."""
    port = settings.observability.temporal_metrics_port
    if not port:
        return None
    address = f"{settings.observability.worker_metrics_host}:{port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))


async def run_workers(
    settings: Settings, queues: list[str], ready: Callable[[], None] | None = None
) -> None:
    setup_tracing(settings, "chatee-worker")
    client = await temporal.connect(settings, runtime=_runtime(settings))
    await temporal.ensure_search_attributes(client)
    if port := settings.observability.worker_metrics_port:
        metrics.serve(port, settings.observability.worker_metrics_host)
    services = Services.create(settings, client, role="worker")
    lease = None
    if "node_id" not in settings.model_fields_set:
        lease = NodeLease(services.redis)
        await lease.acquire()
    workers = build_workers(client, services, queues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    if settings.workers.deployment_name and settings.workers.promote_on_start:
        await promote(client, settings)
    log.info(
        "workers started",
        queues=[QUEUES[q] for q in queues],
        build_id=settings.workers.build_id,
        metrics_port=settings.observability.worker_metrics_port or None,
    )
    if ready:
        ready()
    await stop.wait()
    log.info("workers stopping")
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    if lease:
        await lease.release()
    await services.close()
    shutdown_tracing()
