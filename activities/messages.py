"""Persist and fan-out activities of the `chatee-messages` queue: replies the chain writes
without a model, tool results it refuses, human replies, agent tasks, and turn endings."""

from __future__ import annotations

import json
import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import announce, complete
from activities.turns import finish_turn
from chatee import session_store
from chatee.a2a_remote import redact_chain
from chatee.ids import new_id
from chatee.models import Agent, Message, Session
from chatee.services import Services
from workflows import names
from workflows.events import TOOL_RESULT
from workflows.types import (
    AgentTaskInput,
    FinishTurnInput,
    StepInput,
    StepResult,
    TaskSession,
    TurnEvent,
)

DEFAULT_REFUSAL = "Sorry, I can't help with that."
APPROVING = ("y", "yes", "ok", "okay", "approve", "approved", "allow", "sure")


class MessageActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.PUBLISH_TURN_EVENT)
    async def publish_turn_event(self, event: TurnEvent) -> None:
        """Append a workflow-decided event (e.g. `human.request`) exactly once."""
        data = {"turn_id": event.turn_id, **event.data}
        await self.services.bus.publish(
            event.session_id, event.event, data, once_key=event.once_key
        )

    @activity.defn(name=names.FINISH_TURN)
    async def finish_turn(self, inp: FinishTurnInput) -> None:
        await finish_turn(self.services, inp)

    @activity.defn(name=names.STORE_REPLY)
    async def store_reply(self, inp: StepInput) -> StepResult:
        """AG_ACCEPT / AG_REFUSE fixed replies, and another agent's answer (AG_CALL_AG)."""
        await announce(self.services.bus, inp)
        params = inp.params
        role = "assistant"
        if "copy_message_id" in params:
            async with self.services.sessionmaker() as db:
                source = await db.get(Message, int(params["copy_message_id"]))
            answer = source.content if source else ""
            if params.get("as_reply"):
                text = answer
            else:  # context for the steps after it, not the reply itself
                role, text = "system", f"Another agent was asked to help and answered:\n{answer}"
        elif inp.action == "AG_REFUSE":
            text = params.get("text") or DEFAULT_REFUSAL
        else:
            text = params.get("text") or ""
        if not text and role == "assistant" and inp.action == "AG_ACCEPT":
            await complete(self.services.bus, inp, "accepted")
            return StepResult("accepted")
        message = await session_store.store_message_once(
            self.services.sessionmaker,
            idempotency_key=f"{inp.turn_id}:{inp.step}:{role}",
            session_id=int(inp.session_id),
            role=role,
            content=text,
            turn_id=int(inp.turn_id),
        )
        await complete(self.services.bus, inp, "stored reply", message_id=str(message.id))
        completed = inp.complete_turn and role == "assistant"
        if completed:
            await finish_turn(
                self.services,
                FinishTurnInput(
                    inp.session_id, inp.turn_id, "completed", str(message.id), inp.prior_usage
                ),
                content=text,
            )
        return StepResult(
            f"{role} message {message.id}",
            message_id=str(message.id) if role == "assistant" else None,
            turn_completed=completed,
        )

    @activity.defn(name=names.STORE_TOOL_RESULT)
    async def store_tool_result(self, inp: StepInput) -> StepResult:
        """A tool call the agent may not make still gets an (error) result."""
        await announce(self.services.bus, inp)
        call_id, reason = inp.params["tool_call_id"], inp.params["error"]
        body = {"is_error": True, "content": [{"type": "text", "text": reason}]}
        await session_store.store_message_once(
            self.services.sessionmaker,
            idempotency_key=f"{inp.turn_id}:{inp.step}:{call_id}:tool",
            session_id=int(inp.session_id),
            role="tool",
            content=json.dumps(body),
            turn_id=int(inp.turn_id),
            tool_call_id=call_id,
        )
        await self.services.bus.publish(
            inp.session_id,
            TOOL_RESULT,
            {"turn_id": inp.turn_id, "step": inp.step, "tool_call_id": call_id, "is_error": True,
             "content": body["content"]},
            f"{inp.turn_id}:{inp.step}:{call_id}:result",
        )  # fmt: skip
        await complete(self.services.bus, inp, reason)
        return StepResult(reason, message_id=None)

    @activity.defn(name=names.RECORD_HUMAN_REPLY)
    async def record_human_reply(self, inp: StepInput) -> StepResult:
        async with self.services.sessionmaker() as db:
            reply = await db.get(Message, int(inp.params["reply_message_id"]))
        text = reply.content.strip() if reply else ""
        first_word = re.match(r"\w+", text.lower())
        approved = bool(first_word) and first_word.group() in APPROVING
        choice = "approved" if approved else "declined"
        summary = f"human replied: {text[:80]}"
        await complete(
            self.services.bus, inp, summary, reply_message_id=inp.params["reply_message_id"]
        )
        return StepResult(summary, choice=choice if "approval_for" in inp.params else None)

    @activity.defn(name=names.PREPARE_AGENT_TASK)
    async def prepare_agent_task(self, task: AgentTaskInput) -> TaskSession:
        """A session of the other agent holding the task as its first message (once per step:
        a retry finds the session the first attempt made)."""
        key = f"task:{task.parent_turn_id}:{task.parent_step}"
        async with self.services.sessionmaker() as db:
            agent = await db.get(Agent, int(task.agent_id))
            parent = await db.get(Session, int(task.parent_session_id))
            if agent is None or parent is None or agent.owner_id != parent.user_id:
                raise ApplicationError(
                    f"agent {task.agent_id} does not exist for this user",
                    type="AgentNotFound",
                    non_retryable=True,
                )
            done = (
                await db.execute(select(Message).where(Message.idempotency_key == key))
            ).scalar_one_or_none()
            if done is not None:
                return TaskSession(
                    str(done.session_id),
                    str(done.turn_id),
                    str(done.id),
                    redact_chain(agent.chain),
                    agent.name,
                )
            text = task.task or await _asked(db, task)
            session_id = new_id()
            db.add(
                Session(
                    id=session_id,
                    user_id=parent.user_id,
                    agent_id=agent.id,
                    title=f"task from session {parent.id}",
                    workflow_id=names.task_workflow_id(task.parent_turn_id, task.parent_step),
                    status="closed",
                )
            )
            await db.commit()
        message = await session_store.store_message_once(
            self.services.sessionmaker,
            idempotency_key=key,
            session_id=session_id,
            role="user",
            content=text,
            turn_id=new_id(),
        )
        return TaskSession(
            str(message.session_id),
            str(message.turn_id),
            str(message.id),
            redact_chain(agent.chain),  # header secrets stay out of the history
            agent.name,
        )


async def _asked(db: AsyncSession, task: AgentTaskInput) -> str:
    """The parent turn's user message: the task when the chain names none."""
    stmt = select(Message.content).where(
        Message.session_id == int(task.parent_session_id),
        Message.turn_id == int(task.parent_turn_id),
        Message.role == "user",
    )
    return (await db.execute(stmt.limit(1))).scalar_one_or_none() or ""
