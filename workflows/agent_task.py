"""AgentTask: another agent does one task for a session's turn (`AG_CALL_AG`), as a child
workflow. It gets a session of its own, so its messages and events stay apart from the
caller's; cancelling the caller's turn cancels it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.executor import ChainExecutor, TurnContext
from workflows.types import (
    MESSAGES_QUEUE,
    AgentTaskInput,
    AgentTaskResult,
    HumanReply,
    TaskSession,
)


@workflow.defn(name="AgentTask")
class AgentTask:
    def __init__(self) -> None:
        self._human_replies: dict[str, HumanReply] = {}

    @workflow.run
    async def run(self, task: AgentTaskInput) -> AgentTaskResult:
        session = await workflow.execute_activity(
            "PrepareAgentTask",
            task,
            result_type=TaskSession,
            task_queue=MESSAGES_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                maximum_interval=timedelta(seconds=10), non_retryable_error_types=["AgentNotFound"]
            ),
            summary=f"prepare a task for agent {task.agent_id}",
        )
        ctx = TurnContext(
            session_id=session.session_id,
            agent_id=task.agent_id,
            user_id=task.user_id,
            turn_id=session.turn_id,
            message_id=session.message_id,
            options=task.options,
            human_replies=self._human_replies,
        )
        outcome = await ChainExecutor(ctx, session.chain).run()
        if outcome.status == "cancelled":  # recorded; now show the run as cancelled too
            raise asyncio.CancelledError
        return AgentTaskResult(session.session_id, outcome.message_id, outcome.status)

    @workflow.signal(name="human_reply")
    def human_reply(self, reply: HumanReply) -> None:
        self._human_replies[reply.request_id] = reply
