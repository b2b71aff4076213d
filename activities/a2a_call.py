"""`CallRemoteAgent` (AG_CALL_AG with `a2a_url`), on the `chatee-tools` queue: ask a remote A2A
agent and store its answer in the session, as a local agent's answer is stored — the reply
itself when the step is the chain's last, else a `system` note the next steps read.

Idempotent per (turn, step): once the answer is stored a retry only reports it, so the remote
agent is asked again only while no answer is stored. The step's `headers` are secrets: the
workflow's chain carries them as `***`, this activity reads their values from the agent's
stored chain, and they go to the remote agent and nowhere else (not in events, summaries,
errors, logs, or Temporal histories).
"""

from __future__ import annotations

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import announce, complete, heartbeating
from activities.turns import finish_turn
from chatee import a2a_remote, session_store
from chatee.models import Agent, Message
from chatee.services import Services
from chatee.tracing import span
from workflows import names
from workflows.types import FinishTurnInput, StepInput, StepResult

PREVIEW_CHARS = 120


class RemoteAgentActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.CALL_REMOTE_AGENT)
    async def call(self, inp: StepInput) -> StepResult:
        await announce(self.services.bus, inp)
        params = inp.params
        url, as_reply = str(params["a2a_url"]), bool(params.get("as_reply"))
        role = "assistant" if as_reply else "system"
        key = f"{inp.turn_id}:{inp.step}:{role}"
        message = await self._stored(key)
        if message is None:
            answer = await self._ask(inp, url, params.get("headers") or {})
            text = answer.text
            if not as_reply:  # context for the steps after it, not the reply itself
                text = f"The remote agent {answer.agent_name!r} was asked to help and answered:\n"
                text += answer.text
            message = await session_store.store_message_once(
                self.services.sessionmaker,
                idempotency_key=key,
                session_id=int(inp.session_id),
                role=role,
                content=text,
                turn_id=int(inp.turn_id),
            )
        said = message.content if as_reply else message.content.split("\n", 1)[-1]
        preview = " ".join(said.split())[:PREVIEW_CHARS]
        summary = f"remote agent at {a2a_remote.host_of(url)} answered: {preview}"[:200]
        await complete(self.services.bus, inp, summary, message_id=str(message.id))
        completed = inp.complete_turn and as_reply
        if completed:
            await finish_turn(
                self.services,
                FinishTurnInput(
                    inp.session_id, inp.turn_id, "completed", str(message.id), inp.prior_usage
                ),
                content=message.content,
            )
        return StepResult(
            summary,
            message_id=str(message.id) if as_reply else None,
            turn_completed=completed,
        )

    async def _stored(self, key: str) -> Message | None:
        """The answer an earlier attempt stored before it could report."""
        async with self.services.sessionmaker() as db:
            found = await db.execute(select(Message).where(Message.idempotency_key == key))
            return found.scalar_one_or_none()

    async def _ask(
        self, inp: StepInput, url: str, headers: dict[str, str]
    ) -> a2a_remote.RemoteAnswer:
        settings = self.services.settings
        text = inp.params.get("task") or await self._asked(inp)
        attempt = activity.info().attempt
        async with self.services.sessionmaker() as db:
            agent = await db.get(Agent, int(inp.agent_id))
        try:
            headers = a2a_remote.unmask_headers(url, headers, agent.chain if agent else None)
            with span("a2a.call", **{"a2a.host": a2a_remote.host_of(url)}):
                async with heartbeating():
                    return await a2a_remote.ask(
                        url,
                        headers,
                        text,
                        settings,
                        message_id=f"chatee-{inp.turn_id}-{inp.step}-{attempt}",
                        max_chars=settings.limits.max_message_bytes - 200,  # room for the note
                    )
        except a2a_remote.RemoteAgentError as exc:
            raise ApplicationError(
                exc.message, type=exc.kind, non_retryable=not exc.retryable
            ) from None

    async def _asked(self, inp: StepInput) -> str:
        """The turn's user message: the task when the step names none."""
        async with self.services.sessionmaker() as db:
            stmt = select(Message.content).where(
                Message.session_id == int(inp.session_id),
                Message.turn_id == int(inp.turn_id),
                Message.role == "user",
            )
            return (await db.execute(stmt.limit(1))).scalar_one_or_none() or ""
