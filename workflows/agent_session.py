"""AgentSession: the actor behind one agent session (workflow id `session-<id>`).

Its mailbox is the `send_message` update, which queues a turn and answers with the turn id at
once; turns run one at a time through the ChainExecutor. A message that arrives mid-turn follows
the agent's double-texting policy: `queue`, `reject` (refused by the validator), `interrupt`
(the running turn is cancelled, then the new one runs) or `rollback` (the same, and the
cancelled turn's messages are deleted). History holds ids only; after enough turns the session
continues as new, carrying just its queue and the turn ids it has already accepted.
"""

from __future__ import annotations

import asyncio
from collections import deque

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.executor import ChainExecutor, TurnContext
from workflows.types import (
    CancelTurn,
    HumanReply,
    PendingTurn,
    SendMessage,
    SessionInput,
    SessionState,
)

RECENT_TURN_IDS = 500
INTERRUPTING = {"interrupt": "interrupted", "rollback": "rolled_back"}


@workflow.defn(name=names.SESSION_WORKFLOW)
class AgentSession:
    @workflow.init
    def __init__(self, start: SessionInput) -> None:
        self._start = start
        self._queue: deque[PendingTurn] = deque(start.pending)
        self._recent: deque[str] = deque(start.recent_turn_ids, maxlen=RECENT_TURN_IDS)
        self._turns_completed = start.turns_completed
        self._human_replies: dict[str, HumanReply] = {}
        self._executor: ChainExecutor | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._closing = False

    @workflow.run
    async def run(self, start: SessionInput) -> int:
        turns_this_run = 0
        while True:
            await workflow.wait_condition(lambda: bool(self._queue) or self._closing)
            if not self._queue:
                break
            self._turn_task = asyncio.create_task(self._run_turn(self._queue.popleft()))
            await self._turn_task
            self._turn_task = None
            turns_this_run += 1
            if (
                turns_this_run >= start.options.turns_before_continue_as_new
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over())
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._turns_completed

    async def _run_turn(self, pending: PendingTurn) -> None:
        ctx = TurnContext(
            session_id=self._start.session_id,
            agent_id=self._start.agent_id,
            user_id=self._start.user_id,
            turn_id=pending.turn_id,
            message_id=pending.message_id,
            options=self._start.options,
            human_replies=self._human_replies,
        )
        self._executor = ChainExecutor(ctx, pending.chain)
        try:
            await self._executor.run()
        except asyncio.CancelledError:  # cancelled before the executor could record it
            await self._executor.cancel_outcome(ctx.cancel_reason or "cancelled")
        finally:
            self._turns_completed += 1
            self._executor = None

    def _cancel_running(self, reason: str) -> None:
        running = self._executor
        if (
            running
            and not running.finishing
            and self._turn_task is not None
            and not self._turn_task.done()
        ):
            running.ctx.cancel_reason = reason
            self._turn_task.cancel()

    @workflow.update(name=names.SEND_MESSAGE_UPDATE)
    def send_message(self, message: SendMessage) -> str:
        if message.turn_id in self._recent:  # a resent update is not a second turn
            return message.turn_id
        self._recent.append(message.turn_id)
        if message.double_texting in INTERRUPTING:
            self._cancel_running(INTERRUPTING[message.double_texting])
        self._queue.append(PendingTurn(message.turn_id, message.message_id, message.chain))
        return message.turn_id

    @send_message.validator
    def _validate_send_message(self, message: SendMessage) -> None:
        if message.turn_id in self._recent:
            return
        if self._closing:
            raise ApplicationError("the session is closed", type="SessionClosed")
        if message.double_texting == "reject" and (self._executor or self._queue):
            raise ApplicationError("the agent is still answering", type="SessionBusy")

    @workflow.signal(name=names.CANCEL_TURN_SIGNAL)
    def cancel_turn(self, request: CancelTurn) -> None:
        running = self._executor
        if running and request.turn_id in (None, running.ctx.turn_id):
            self._cancel_running(request.reason)

    @workflow.signal(name=names.HUMAN_REPLY_SIGNAL)
    def human_reply(self, reply: HumanReply) -> None:
        self._human_replies[reply.request_id] = reply

    @workflow.signal(name=names.CLOSE_SIGNAL)
    def close(self) -> None:
        self._closing = True

    @workflow.query(name=names.STATE_QUERY)
    def state(self) -> SessionState:
        running = self._executor
        waiting = running.ctx.waiting_for[0] if running and running.ctx.waiting_for else None
        if self._closing:
            status = "closing"
        elif waiting:
            status = "waiting_for_human"
        else:
            status = "running" if running else "idle"
        return SessionState(
            status=status,
            queue_length=len(self._queue),
            turns_completed=self._turns_completed,
            active_turn=running.turn if running else None,
            pending_human_request=waiting,
        )

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
