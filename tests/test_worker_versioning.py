"""Worker versioning: agent logic can be upgraded while sessions are live.

A worker of Worker Deployment build `v1` serves a session's first turn; then `v2` of the same
deployment is made current through the client API (as `temporal worker deployment
set-current-version` would) and v1 is stopped; the SAME session's next turn runs on v2. The
session is AUTO_UPGRADE, so it moves to v2 at its next workflow task: v2 replays v1's history
without non-determinism, and the whole history (both builds) still replays against the current
code with Temporal's Replayer. Changed workflow logic ships behind `workflow.patched()`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client
from temporalio.worker import Replayer

from chatee.client import TurnCompleted
from chatee.devstack import free_port
from tests.support import (
    ChateeProcess,
    Stack,
    new_session,
    signed_up,
    stored_messages,
    wait_http,
    wait_log,
)
from tests.test_metrics import register_namespace
from workflows.agent_session import AgentSession
from workflows.agent_task import AgentTask

START_TIMEOUT = 180  # three processes importing at once on a shared, loaded machine


@pytest.fixture
def cleanup() -> Iterator[list[Stack]]:
    stacks: list[Stack] = []
    yield stacks
    for stack in stacks:
        stack.stop()


async def test_a_session_started_on_v1_finishes_on_v2(
    stack_env: dict[str, str],
    temporal_client: Client,
    temporal_address: str,
    tmp_path_factory: pytest.TempPathFactory,
    cleanup: list[Stack],
) -> None:
    namespace = await register_namespace(temporal_client, "versioning")
    deployment = f"chatee-{uuid.uuid4().hex[:6]}"
    env = {
        **stack_env,
        "CHATEE_TEMPORAL_NAMESPACE": namespace,
        "CHATEE_WORKERS__DEPLOYMENT_NAME": deployment,
    }
    tmp = tmp_path_factory.mktemp("versioning")
    stack = Stack(env=env, tmp=tmp)
    cleanup.append(stack)
    # all three processes start at once (start-up is the slow part on a loaded machine):
    # v1 makes itself current; v2 waits, polling, until the operator promotes it
    v1_env = {**env, "CHATEE_WORKERS__BUILD_ID": "v1", "CHATEE_WORKERS__PROMOTE_ON_START": "true"}
    v1 = ChateeProcess(["worker"], v1_env, tmp / "worker-v1.log").start()
    v2_env = {**env, "CHATEE_WORKERS__BUILD_ID": "v2"}
    v2 = ChateeProcess(["worker"], v2_env, tmp / "worker-v2.log").start()
    stack.api_port = free_port()
    api = ChateeProcess(["api", "--port", str(stack.api_port)], env, tmp / "api.log").start()
    stack.processes += [v1, v2, api]
    wait_http(f"{stack.base}/readyz", api, timeout=START_TIMEOUT)
    wait_log(v1, "workers started", timeout=START_TIMEOUT)
    wait_log(v2, "workers started", timeout=START_TIMEOUT)

    client = await Client.connect(temporal_address, namespace=namespace)
    async with await signed_up(stack.base, timeout=60) as chatee:
        session = await new_session(chatee)
        first = await chatee.stream_turn(session.id, "first, on v1").run()
        assert first.completed, first.final

        # the upgrade: v2 becomes the deployment's current version, v1 is retired
        await client.workflow_service.set_worker_deployment_current_version(
            SetWorkerDeploymentCurrentVersionRequest(
                namespace=namespace, deployment_name=deployment, build_id="v2"
            )
        )
        v1.stop()

        second = await chatee.stream_turn(session.id, "second, on v2").run()
        assert isinstance(second.final, TurnCompleted), second.final
        assert second.final.content == "echo: second, on v2"
        messages = await stored_messages(chatee, session.id)
    assert [m.role for m in reversed(messages)] == ["user", "assistant"] * 2
    assert "GenerateReply" in v1.log() and "GenerateReply" in v2.log()

    handle = client.get_workflow_handle(session.workflow_id)
    history = await handle.fetch_history()
    builds = {
        event.workflow_task_completed_event_attributes.deployment_version.build_id
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    }
    assert {"v1", "v2"} <= builds, builds
    failed = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == [], failed  # a non-determinism error would fail a workflow task
    description = await handle.describe()
    assert (
        description.raw_description.workflow_execution_info.versioning_info.deployment_version.build_id
        == "v2"
    )  # noqa: E501

    # the whole two-build history replays against the code as it is now
    await Replayer(workflows=[AgentSession, AgentTask]).replay_workflow(history)
