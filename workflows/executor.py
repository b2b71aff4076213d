"""ChainExecutor: runs one turn's ActionChain inside a workflow, one step at a time.

Each action type maps to a handler. Handlers run activities (every side effect lives there),
child workflows, or durable waits; they may insert steps (tool calls, a decision's branch) or
stop the chain (a refusal). Step status and timing are kept for the `state` query.

Every activity a turn runs starts in `run_activity`, with the options of its kind from the
table below (`KINDS` names the kind of each activity, `presets` says how each kind runs).

How a turn ends — the `complete_turn` / `turn_completed` handshake: every turn is recorded
once and publishes exactly one final event (`turn.completed` or `turn.failed`), normally by the
`FinishTurn` activity the executor runs after the last step. When the last step itself stores
the reply, its activity finishes the turn at once instead, so clients see `turn.completed` as
soon as the reply exists rather than one activity later: the executor sends that step
`complete_turn=True`, the activity records the turn after storing the reply and answers
`turn_completed=True`, and the executor then skips its own `FinishTurn`. A step that turns out
not to be the last (the model asked for tools, so steps are inserted after it) leaves the turn
open and answers False; the step inserted last gets `complete_turn` instead. A failed or
cancelled turn is always finished by the executor. Finishing is idempotent per turn (once key
`<turn>:end`), so a retried activity never ends a turn twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
)
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

from workflows import names
from workflows.chain import (
    AG_ACCEPT,
    AG_CALL_AG,
    AG_CALL_HUMAN,
    AG_MEMORY_LOAD,
    AG_MEMORY_STORE,
    AG_RAG,
    AG_REFUSE,
    AG_SELF_DECIDE,
    AG_SELF_GEN,
    AG_USE_MCP,
    Action,
    ChainBuilder,
    parse_chain,
)
from workflows.events import HUMAN_REQUEST, STEP_STARTED, TURN_STARTED
from workflows.types import (
    AgentTaskInput,
    AgentTaskResult,
    FinishTurnInput,
    HumanReply,
    StepInput,
    StepResult,
    StepState,
    ToolCallInput,
    ToolCallResult,
    TurnEvent,
    TurnOptions,
    TurnState,
)

NON_RETRYABLE = ["LLMNotConfigured", "AgentNotFound", "ProviderRejected", "BadChain"]
# chatee/a2a_remote.py raises these as non-retryable already; listed so the policy says so too
REMOTE_NON_RETRYABLE = [
    "RemoteAgentRefused",
    "RemoteAgentUnsupported",
    "RemoteAgentRejected",
    "RemoteAgentCancelled",
    "RemoteAgentInputRequired",
    "RemoteAgentChanged",
    "RemoteAgentError",
]
REMOTE_AGENT_SECONDS = 300  # one attempt at a remote agent's answer
DEFAULT_HUMAN_TIMEOUT = 24 * 3600

# -- how each activity of a turn runs -----------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Where one kind of activity runs, how long an attempt may take, how it is retried."""

    task_queue: str | None  # None: a local activity, run by the workflow's own worker
    start_to_close: timedelta
    retry: RetryPolicy | None = None  # None: Temporal's default policy
    heartbeat: timedelta | None = None
    # wait for the activity to stop, so a cancelled turn never stores a reply afterwards
    wait_for_cancel: bool = False


SHORT = timedelta(seconds=30)
STEP = timedelta(seconds=120)
QUICK_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=10), non_retryable_error_types=NON_RETRYABLE
)


def presets(opts: TurnOptions) -> dict[str, Preset]:
    """Every kind of activity a turn runs. An LLM step's limits are the API's config."""
    return {
        "llm": Preset(
            names.LLM_QUEUE,
            timedelta(seconds=opts.llm_start_to_close_seconds),
            RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=opts.llm_max_attempts,
                non_retryable_error_types=NON_RETRYABLE,
            ),
            heartbeat=timedelta(seconds=opts.llm_heartbeat_seconds),
            wait_for_cancel=True,
        ),
        "tool": Preset(
            names.TOOLS_QUEUE,
            timedelta(seconds=300),
            QUICK_RETRY,
            heartbeat=timedelta(seconds=60),
            wait_for_cancel=True,
        ),
        # a remote A2A agent: like a tool, a network call to someone else's server; a failed
        # remote task is asked again (as a new task) a few times, a refusal never
        "remote_agent": Preset(
            names.TOOLS_QUEUE,
            timedelta(seconds=REMOTE_AGENT_SECONDS),
            RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=5,
                non_retryable_error_types=[*NON_RETRYABLE, *REMOTE_NON_RETRYABLE],
            ),
            heartbeat=timedelta(seconds=10),  # a cancel arrives within ~8 s (heartbeat throttle)
            wait_for_cancel=True,
        ),
        "rag": Preset(names.RAG_QUEUE, STEP, QUICK_RETRY),
        "memory": Preset(names.RAG_QUEUE, STEP, QUICK_RETRY),
        "messages": Preset(names.MESSAGES_QUEUE, STEP, QUICK_RETRY),
        "task": Preset(
            names.MESSAGES_QUEUE,
            SHORT,
            RetryPolicy(
                maximum_interval=timedelta(seconds=10), non_retryable_error_types=["AgentNotFound"]
            ),
        ),
        "finish": Preset(
            names.MESSAGES_QUEUE, SHORT, RetryPolicy(maximum_interval=timedelta(seconds=10))
        ),
        "event": Preset(None, timedelta(seconds=10)),  # workflow-decided events, e.g. human.request
    }


# the kind of every activity AgentSession and AgentTask run (they run no other)
KINDS: dict[str, str] = {
    names.GENERATE_REPLY: "llm",
    names.DECIDE_OPTION: "llm",
    names.CALL_MCP_TOOL: "tool",
    names.CALL_REMOTE_AGENT: "remote_agent",
    names.RETRIEVE: "rag",
    names.LOAD_MEMORY: "memory",
    names.STORE_MEMORY: "memory",
    names.STORE_REPLY: "messages",
    names.STORE_TOOL_RESULT: "messages",
    names.RECORD_HUMAN_REPLY: "messages",
    names.PREPARE_AGENT_TASK: "task",
    names.FINISH_TURN: "finish",
    names.PUBLISH_TURN_EVENT: "event",
}


async def run_activity(
    name: str, arg: Any, opts: TurnOptions, summary: str, result_type: type | None = None
) -> Any:
    """Run one of a turn's activities with the options of its kind."""
    preset = presets(opts)[KINDS[name]]
    if preset.task_queue is None:
        return await workflow.execute_local_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=preset.start_to_close,
            retry_policy=preset.retry,
            summary=summary,
        )
    return await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        task_queue=preset.task_queue,
        start_to_close_timeout=preset.start_to_close,
        heartbeat_timeout=preset.heartbeat,
        retry_policy=preset.retry,
        cancellation_type=(
            ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            if preset.wait_for_cancel
            else ActivityCancellationType.TRY_CANCEL
        ),
        summary=summary,
    )


# -- the executor ---------------------------------------------------------------------------


class TurnFailed(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass
class TurnContext:
    """What the executor needs from the workflow that runs it."""

    session_id: str
    agent_id: str
    user_id: str
    turn_id: str
    message_id: str
    options: TurnOptions
    human_replies: dict[str, HumanReply]
    waiting_for: list[str] = field(default_factory=list)  # human request ids being awaited
    cancel_reason: str | None = None  # set by whoever cancels the turn: why


@dataclass
class Outcome:
    summary: str
    message_id: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    insert: list[Action] = field(default_factory=list)
    stop: bool = False
    turn_completed: bool = False


Handler = Callable[[Action, StepState, bool], Awaitable[Outcome]]


class ChainExecutor:
    def __init__(self, ctx: TurnContext, template: list[Any]) -> None:
        self.ctx = ctx
        self.plan = parse_chain(template)
        self.turn = TurnState(ctx.turn_id, ctx.message_id, [])
        self._next_index = 0
        self.turn.steps = [self._new_step(a) for a in self.plan]
        self._started = False
        self.finishing = False
        self._usage: dict[str, int] = {}
        self._approvals: dict[str, bool] = {}
        self._handlers: dict[str, Handler] = {
            AG_ACCEPT: self._accept,
            AG_REFUSE: self._refuse,
            AG_SELF_GEN: self._self_gen,
            AG_SELF_DECIDE: self._self_decide,
            AG_USE_MCP: self._use_mcp,
            AG_CALL_AG: self._call_agent,
            AG_CALL_HUMAN: self._call_human,
            AG_RAG: self._step_activity(names.RETRIEVE),
            AG_MEMORY_LOAD: self._step_activity(names.LOAD_MEMORY),
            AG_MEMORY_STORE: self._step_activity(names.STORE_MEMORY),
        }

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> FinishTurnInput:
        """Run every step; always returns how the turn ended (it never raises, even when
        cancelled — cancellation is recorded as the outcome). Only the last step's
        `turn_completed` counts: see the handshake in the module docstring."""
        reply: str | None = None
        completed_by_step = False
        i = 0
        try:
            while i < len(self.plan):
                action, step = self.plan[i], self.turn.steps[i]
                self._begin(step)
                last = i == len(self.plan) - 1
                outcome = await self._handlers[action.type](action, step, last)
                self._end(step, "completed", outcome.summary)
                reply = outcome.message_id or reply
                self._usage = add_usage(self._usage, outcome.usage)
                completed_by_step = outcome.turn_completed
                for offset, new in enumerate(outcome.insert, start=1):
                    self.plan.insert(i + offset, new)
                    self.turn.steps.insert(i + offset, self._new_step(new))
                if outcome.stop:
                    for later in self.turn.steps[i + 1 :]:
                        self._end(later, "interrupted", "the chain stopped earlier")
                    break
                i += 1
        except asyncio.CancelledError:
            return await self._wind_down(self.ctx.cancel_reason or "cancelled")
        except (ActivityError, ChildWorkflowError, TurnFailed) as err:
            if _cancelled(err):  # the step stopped because the turn was cancelled
                return await self._wind_down(self.ctx.cancel_reason or "cancelled")
            error_type, message = describe(err)
            self._fail_running(error_type)
            return await self._finish(
                FinishTurnInput(
                    self.ctx.session_id,
                    self.ctx.turn_id,
                    "failed",
                    usage=self._usage,
                    error_type=error_type,
                    error_message=message,
                )
            )
        self.turn.status = "completed"
        result = FinishTurnInput(
            self.ctx.session_id, self.ctx.turn_id, "completed", reply, self._usage
        )
        if completed_by_step:
            return result
        return await self._finish(result)

    async def cancel_outcome(self, reason: str) -> FinishTurnInput:
        """Record a cancellation that happened before or between steps."""
        return await self._wind_down(reason)

    async def _wind_down(self, reason: str) -> FinishTurnInput:
        for step in self.turn.steps:
            if step.status == "running":
                self._end(step, "interrupted", reason)
            elif step.status == "pending":
                self._end(step, "interrupted", "not started")
        self.turn.status = reason
        result = FinishTurnInput(
            self.ctx.session_id,
            self.ctx.turn_id,
            reason,
            usage=self._usage,
            error_type=reason,
            error_message=_REASONS.get(reason, reason),
            rollback=reason == "rolled_back",
        )
        return await self._finish(result)

    async def _finish(self, result: FinishTurnInput) -> FinishTurnInput:
        self.finishing = True  # past this point the turn is no longer cancellable
        result.steps = [
            {"index": s.index, "action": s.action, "status": s.status, "result": s.result}
            for s in self.turn.steps
        ]
        if result.status != "completed":
            self.turn.status = result.status
        # FinishTurn also closes any tool call left without a result, so the record stays whole
        await run_activity(
            names.FINISH_TURN,
            result,
            self.ctx.options,
            f"turn {result.turn_id}: {result.status}",
        )
        return result

    # -- handlers ---------------------------------------------------------------------------

    async def _accept(self, action: Action, step: StepState, last: bool) -> Outcome:
        result = await self._run_step(names.STORE_REPLY, action, step, last)
        return Outcome(result.summary, result.message_id, turn_completed=result.turn_completed)

    async def _refuse(self, action: Action, step: StepState, last: bool) -> Outcome:
        result = await self._run_step(names.STORE_REPLY, action, step, True)
        return Outcome(result.summary, result.message_id, stop=True, turn_completed=True)

    async def _self_gen(self, action: Action, step: StepState, last: bool) -> Outcome:
        tool_round = int(action.params.get("round", 0))
        max_rounds = int(action.params.get("max_tool_rounds", self.ctx.options.max_tool_rounds))
        inp = self._input(action, step, last)
        inp.prior_usage = dict(self._usage)
        inp.allow_tools = tool_round < max_rounds
        result = await self._generate(inp)
        if not result.tool_calls:
            return Outcome(
                result.summary,
                result.message_id,
                result.usage,
                turn_completed=result.turn_completed,
            )
        # the tool round: each call (after a human's approval, if its policy asks for one),
        # then the same step again with the results
        then = ChainBuilder()
        for call in result.tool_calls:
            if call.policy == "approve":
                then.step(
                    AG_CALL_HUMAN,
                    prompt=f"Allow the tool {call.name}? Reply yes or no.",
                    approval_for=call.id,
                )
            then.step(
                AG_USE_MCP,
                tool_call_id=call.id,
                assistant_message_id=result.message_id,
                server_id=call.server_id,
                tool=call.tool,
                name=call.name,
                policy=call.policy,
            )
        follow_up = {k: v for k, v in action.params.items() if k != "round"}
        then.step(AG_SELF_GEN, **follow_up, round=tool_round + 1)
        asked = ", ".join(c.name for c in result.tool_calls)
        return Outcome(f"asked for tools: {asked}", None, result.usage, insert=then.actions())

    async def _generate(self, inp: StepInput) -> StepResult:
        try:
            return await self._activity(names.GENERATE_REPLY, inp, "generate reply")
        except ActivityError as err:
            fallback = self.ctx.options.fallback_provider
            if not fallback or describe(err)[0] in NON_RETRYABLE:
                raise
        # the first provider kept failing: same step, second provider; clients drop partial text
        inp.provider, inp.model, inp.failover = fallback, self.ctx.options.fallback_model, True
        return await self._activity(
            names.GENERATE_REPLY, inp, f"generate reply (failover to {fallback})"
        )

    async def _self_decide(self, action: Action, step: StepState, last: bool) -> Outcome:
        inp = self._input(action, step, last=False)
        result = await self._activity(names.DECIDE_OPTION, inp, "decide")
        branch = action.params.get("branches", {}).get(result.choice or "", [])
        return Outcome(
            f"chose {result.choice}",
            usage=result.usage,
            insert=parse_chain(branch) if branch else [],
        )

    async def _use_mcp(self, action: Action, step: StepState, last: bool) -> Outcome:
        params = action.params
        call_id = params.get("tool_call_id") or f"chain-{self.ctx.turn_id}-{step.index}"
        denied = params.get("policy") in ("deny", "unknown") or (
            params.get("policy") == "approve" and not self._approvals.get(call_id, False)
        )
        if denied:
            reason = {
                "unknown": f"there is no tool named {params.get('name')}",
                "deny": f"the tool {params.get('name')} is not allowed for this agent",
            }.get(params.get("policy", ""), f"a human declined the tool {params.get('name')}")
            inp = self._input(action, step, last=False)
            inp.params = {"tool_call_id": call_id, "error": reason}
            result = await self._activity(names.STORE_TOOL_RESULT, inp, "record refused tool call")
            return Outcome(result.summary)
        call = ToolCallInput(
            session_id=self.ctx.session_id,
            agent_id=self.ctx.agent_id,
            user_id=self.ctx.user_id,
            turn_id=self.ctx.turn_id,
            step=step.index,
            assistant_message_id=params.get("assistant_message_id") or "",
            tool_call_id=call_id,
            server_id=str(params["server_id"]),
            tool=params["tool"],
            arguments=params.get("arguments") if "tool_call_id" not in params else None,
            start_turn=self._take_start(),
        )
        result = await run_activity(
            names.CALL_MCP_TOOL,
            call,
            self.ctx.options,
            f"turn {self.ctx.turn_id} step {step.index}: tool {params.get('name', '')}",
            ToolCallResult,
        )
        return Outcome(result.summary)

    async def _call_agent(self, action: Action, step: StepState, last: bool) -> Outcome:
        if "a2a_url" in action.params:  # a remote A2A agent: one activity, not a child workflow
            return await self._call_remote_agent(action, step, last)
        await self._announce(step)
        task = AgentTaskInput(
            parent_session_id=self.ctx.session_id,
            parent_turn_id=self.ctx.turn_id,
            parent_step=step.index,
            agent_id=str(action.params["agent_id"]),
            user_id=self.ctx.user_id,
            task=action.params.get("task"),
            options=self.ctx.options,
        )
        answer = await workflow.execute_child_workflow(
            names.TASK_WORKFLOW,
            task,
            result_type=AgentTaskResult,
            id=names.task_workflow_id(self.ctx.turn_id, step.index),
            task_queue=names.AGENTS_QUEUE,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            static_summary=f"task for agent {task.agent_id} from session {self.ctx.session_id}",
        )
        if answer.status != "completed" or not answer.message_id:
            raise TurnFailed(
                "agent_task_failed",
                f"agent {task.agent_id} could not do the task ({answer.status})",
            )
        inp = self._input(action, step, last)
        inp.params = {"copy_message_id": answer.message_id, "as_reply": last}
        result = await self._activity(names.STORE_REPLY, inp, "store the other agent's answer")
        return Outcome(
            result.summary,
            result.message_id if last else None,
            turn_completed=result.turn_completed,
        )

    async def _call_remote_agent(self, action: Action, step: StepState, last: bool) -> Outcome:
        inp = self._input(action, step, last)
        inp.params["as_reply"] = last
        host = urlsplit(str(action.params["a2a_url"])).hostname
        result = await self._activity(names.CALL_REMOTE_AGENT, inp, f"ask remote agent at {host}")
        return Outcome(
            result.summary,
            result.message_id if last else None,
            turn_completed=result.turn_completed,
        )

    async def _call_human(self, action: Action, step: StepState, last: bool) -> Outcome:
        request_id = f"{self.ctx.turn_id}-{step.index}"
        timeout = float(action.params.get("timeout_seconds", DEFAULT_HUMAN_TIMEOUT))
        prompt = action.params.get("prompt") or "The agent needs your input to continue."
        await self._announce(step)
        await self._event(
            HUMAN_REQUEST,
            {
                "request_id": request_id,
                "step": step.index,
                "prompt": prompt,
                "timeout_seconds": timeout,
            },
            f"{request_id}:request",
        )
        self.ctx.waiting_for.append(request_id)
        try:
            await workflow.wait_condition(
                lambda: request_id in self.ctx.human_replies, timeout=timedelta(seconds=timeout)
            )
        except TimeoutError:
            if action.params.get("on_timeout", "fail") == "fail":
                raise TurnFailed(
                    "human_timeout", f"no human reply within {timeout:g} seconds"
                ) from None
            if "approval_for" in action.params:
                self._approvals[action.params["approval_for"]] = False
            return Outcome("no reply in time; continued")
        finally:
            self.ctx.waiting_for.remove(request_id)
        reply = self.ctx.human_replies.pop(request_id)
        inp = self._input(action, step, last=False)
        inp.params = {"reply_message_id": reply.message_id, **action.params}
        result = await self._activity(names.RECORD_HUMAN_REPLY, inp, "record human reply")
        if "approval_for" in action.params:
            self._approvals[action.params["approval_for"]] = result.choice == "approved"
        return Outcome(result.summary)

    def _step_activity(self, name: str) -> Handler:
        async def handler(action: Action, step: StepState, last: bool) -> Outcome:
            result = await self._run_step(name, action, step, last)
            return Outcome(result.summary, result.message_id, result.usage)

        return handler

    # -- plumbing ---------------------------------------------------------------------------

    def _input(self, action: Action, step: StepState, last: bool) -> StepInput:
        return StepInput(
            session_id=self.ctx.session_id,
            agent_id=self.ctx.agent_id,
            user_id=self.ctx.user_id,
            turn_id=self.ctx.turn_id,
            step=step.index,
            action=action.type,
            params=dict(action.params),
            start_turn=self._take_start(),
            complete_turn=last,
            prior_usage=dict(self._usage),
        )

    def _take_start(self) -> bool:
        first, self._started = not self._started, True
        return first

    async def _run_step(self, name: str, action: Action, step: StepState, last: bool) -> StepResult:
        return await self._activity(name, self._input(action, step, last), action.type)

    async def _activity(self, name: str, inp: StepInput, what: str) -> StepResult:
        """A step activity: a StepInput in, a StepResult out."""
        summary = f"turn {inp.turn_id} step {inp.step}: {what}"
        return await run_activity(name, inp, self.ctx.options, summary, StepResult)

    async def _announce(self, step: StepState) -> None:
        """turn.started / step.started for steps that run no step activity of their own."""
        if self._take_start():
            await self._event(TURN_STARTED, {}, f"{self.ctx.turn_id}:started")
        await self._event(
            STEP_STARTED,
            {"step": step.index, "action": step.action},
            f"{self.ctx.turn_id}:{step.index}:started",
        )

    async def _event(self, name: str, data: dict[str, Any], once_key: str) -> None:
        event = TurnEvent(self.ctx.session_id, self.ctx.turn_id, name, data, once_key)
        await run_activity(names.PUBLISH_TURN_EVENT, event, self.ctx.options, name)

    def _new_step(self, action: Action) -> StepState:
        step = StepState(self._next_index, action.type)
        self._next_index += 1
        return step

    def _begin(self, step: StepState) -> None:
        step.status = "running"
        step.started_at = workflow.now().isoformat()

    def _end(self, step: StepState, status: str, result: str) -> None:
        step.status = status
        step.ended_at = workflow.now().isoformat()
        step.result = result[:200]

    def _fail_running(self, error_type: str) -> None:
        for step in self.turn.steps:
            if step.status == "running":
                self._end(step, "error", error_type)
            elif step.status == "pending":
                self._end(step, "interrupted", "not started")


_REASONS = {
    "cancelled": "the turn was cancelled",
    "interrupted": "a newer message interrupted the turn",
    "rolled_back": "a newer message replaced the turn; it was rolled back",
}


def add_usage(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {k: total.get(k, 0) + more.get(k, 0) for k in keys} if more else dict(total)


def _cancelled(err: BaseException) -> bool:
    cause = err.cause if isinstance(err, (ActivityError, ChildWorkflowError)) else None
    return isinstance(cause, CancelledError)


def describe(err: BaseException) -> tuple[str, str]:
    """(type, message) of a failure, for `turn.failed`."""
    if isinstance(err, TurnFailed):
        return err.error_type, err.message
    cause = err.cause if isinstance(err, (ActivityError, ChildWorkflowError)) else None
    while isinstance(cause, (ActivityError, ChildWorkflowError)) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "error", cause.message
    if cause is not None:
        name = type(cause).__name__
        return ("timeout" if "Timeout" in name else name), str(cause) or name
    return "error", str(err)
