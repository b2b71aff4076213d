"""AgentTask: another agent does one task for a session's turn (`AG_CALL_AG`), as a child
workflow. It gets a session of its own, so its messages and events stay apart from the
caller's; cancelling the caller's turn cancels it."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows import names
from workflows.executor import ChainExecutor, TurnContext, run_activity
from workflows.types import (
    AgentTaskInput,
    AgentTaskResult,
    HumanReply,
    TaskSession,
)


@workflow.defn(name=names.TASK_WORKFLOW)
class AgentTask:
    def __init__(self) -> None:
        self._human_replies: dict[str, HumanReply] = {}

    @workflow.run
    async def run(self, task: AgentTaskInput) -> AgentTaskResult:
        session: TaskSession = await run_activity(
            names.PREPARE_AGENT_TASK,
            task,
            task.options,
            f"prepare a task for agent {task.agent_id}",
            TaskSession,
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

    @workflow.signal(name=names.HUMAN_REPLY_SIGNAL)
    def human_reply(self, reply: HumanReply) -> None:
        self._human_replies[reply.request_id] = reply
