"""AgentSession: the actor behind one agent session (workflow id `session-<id>`).

Its mailbox is the `send_message` update, which queues a turn and answers with the turn id at
once; turns run one at a time. History holds ids only; after enough turns the session
continues as new, carrying just its queue and the ids it has already accepted.
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

from workflows.types import (
    AG_SELF_GEN,
    LLM_QUEUE,
    MESSAGES_QUEUE,
    GenerateInput,
    GenerateResult,
    PendingTurn,
    SendMessage,
    SessionInput,
    SessionState,
    StepState,
    TurnEvent,
    TurnState,
)

RECENT_TURN_IDS = 500
NON_RETRYABLE_LLM_ERRORS = ["LLMNotConfigured", "AgentNotFound", "ProviderRejected"]


@workflow.defn(name="AgentSession")
class AgentSession:
    @workflow.init
    def __init__(self, start: SessionInput) -> None:
        self._start = start
        self._queue: deque[PendingTurn] = deque(start.pending)
        self._recent: deque[str] = deque(start.recent_turn_ids, maxlen=RECENT_TURN_IDS)
        self._turns_completed = start.turns_completed
        self._active: TurnState | None = None
        self._closing = False

    @workflow.run
    async def run(self, start: SessionInput) -> int:
        turns_this_run = 0
        while True:
            await workflow.wait_condition(lambda: bool(self._queue) or self._closing)
            if not self._queue:
                break
            await self._run_turn(self._queue.popleft())
            turns_this_run += 1
            if (
                turns_this_run >= start.options.turns_before_continue_as_new
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over())
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._turns_completed

    @workflow.update(name="send_message")
    def send_message(self, message: SendMessage) -> str:
        if message.turn_id not in self._recent:  # a resent update is not a second turn
            self._recent.append(message.turn_id)
            self._queue.append(PendingTurn(message.turn_id, message.message_id))
        return message.turn_id

    @send_message.validator
    def _validate_send_message(self, message: SendMessage) -> None:
        if message.turn_id in self._recent:
            return
        if self._closing:
            raise ApplicationError("the session is closed", type="SessionClosed")
        if message.double_texting == "reject" and (self._active or self._queue):
            raise ApplicationError("the agent is still answering", type="SessionBusy")

    @workflow.signal(name="close")
    def close(self) -> None:
        self._closing = True

    @workflow.query(name="state")
    def state(self) -> SessionState:
        status = "closing" if self._closing else "running" if self._active else "idle"
        return SessionState(status, len(self._queue), self._turns_completed, self._active)

    async def _run_turn(self, pending: PendingTurn) -> None:
        turn = TurnState(pending.turn_id, pending.message_id, [StepState(0, AG_SELF_GEN)])
        self._active = turn
        step = turn.steps[0]
        self._begin(step)
        try:
            result = await self._generate(turn.turn_id, step.index, start=True, complete=True)
            self._end(step, "completed", f"message {result.message_id}")
            turn.status = "completed"
        except ActivityError as err:
            self._end(step, "error", _error_type(err))
            turn.status = "failed"
            await self._publish_failure(turn.turn_id, err)
        finally:
            self._turns_completed += 1
            self._active = None

    async def _generate(
        self, turn_id: str, step: int, start: bool, complete: bool
    ) -> GenerateResult:
        opts = self._start.options
        return await workflow.execute_activity(
            "GenerateReply",
            GenerateInput(
                session_id=self._start.session_id,
                agent_id=self._start.agent_id,
                turn_id=turn_id,
                step=step,
                start_turn=start,
                complete_turn=complete,
            ),
            result_type=GenerateResult,
            task_queue=LLM_QUEUE,
            start_to_close_timeout=timedelta(seconds=opts.llm_start_to_close_seconds),
            heartbeat_timeout=timedelta(seconds=opts.llm_heartbeat_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=opts.llm_max_attempts,
                non_retryable_error_types=NON_RETRYABLE_LLM_ERRORS,
            ),
            summary=f"turn {turn_id} step {step}: generate reply",
        )

    async def _publish_failure(self, turn_id: str, err: ActivityError) -> None:
        cause = err.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
        await workflow.execute_activity(
            "PublishTurnEvent",
            TurnEvent(
                session_id=self._start.session_id,
                turn_id=turn_id,
                event="turn.failed",
                data={"turn_id": turn_id, "error": {"type": _error_type(err), "message": message}},
                once_key=f"{turn_id}:failed",
            ),
            task_queue=MESSAGES_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            summary=f"turn {turn_id}: publish turn.failed",
        )

    def _begin(self, step: StepState) -> None:
        step.status = "running"
        step.started_at = workflow.now().isoformat()

    def _end(self, step: StepState, status: str, result: str) -> None:
        step.status = status
        step.ended_at = workflow.now().isoformat()
        step.result = result

    def _carry_over(self) -> SessionInput:
        return SessionInput(
            session_id=self._start.session_id,
            agent_id=self._start.agent_id,
            user_id=self._start.user_id,
            options=self._start.options,
            pending=list(self._queue),
            recent_turn_ids=list(self._recent),
            turns_completed=self._turns_completed,
        )


def _error_type(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    if isinstance(cause, CancelledError):
        return "cancelled"
    return type(cause).__name__ if cause else "error"
