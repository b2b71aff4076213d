"""LLM generation: stream a reply through the `openai` SDK into the session's event stream.

Idempotent per (turn, step): one-shot events carry a dedupe key, the reply is stored under
`<turn>:<step>:assistant`, and a retry first tells clients to drop that step's partial text.
"""

from __future__ import annotations

from typing import Any

import openai
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from chatee import store
from chatee.llm import LLMNotConfigured, estimate_tokens
from chatee.models import Agent, Message
from workflows.types import GenerateInput, GenerateResult

PERMANENT_STATUS = {400, 401, 403, 404, 422}


class LLMActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="GenerateReply")
    async def generate(self, inp: GenerateInput) -> GenerateResult:
        bus, turn, step = self.deps.bus, inp.turn_id, inp.step
        base = {"turn_id": turn}
        attempt = activity.info().attempt
        if inp.start_turn:
            await bus.publish(inp.session_id, "turn.started", base, once_key=f"{turn}:started")
        if attempt > 1:
            await bus.publish(
                inp.session_id,
                "step.retry",
                {**base, "step": step, "attempt": attempt},
                once_key=f"{turn}:{step}:retry:{attempt}",
            )
        await bus.publish(
            inp.session_id,
            "step.started",
            {**base, "step": step, "action": "AG_SELF_GEN"},
            once_key=f"{turn}:{step}:started",
        )

        key = f"{turn}:{step}:assistant"
        async with self.deps.db() as db:
            agent = await db.get(Agent, int(inp.agent_id))
            if agent is None:
                raise ApplicationError(
                    "the agent was deleted", type="AgentNotFound", non_retryable=True
                )
            history = await store.turn_context(
                db, int(inp.session_id), int(turn), self.deps.settings.limits.context_messages
            )
        stored = next((m for m in history if m.idempotency_key == key), None)
        if stored is None:  # a previous attempt may have stored it before failing to report
            text, usage = await self._stream(inp, agent, history)
            stored = await store.store_message_once(
                self.deps.db,
                idempotency_key=key,
                session_id=int(inp.session_id),
                role="assistant",
                content=text,
                turn_id=int(turn),
                usage=usage,
            )
        usage = stored.usage or {}
        message_id = str(stored.id)
        await bus.publish(
            inp.session_id,
            "step.completed",
            {**base, "step": step, "action": "AG_SELF_GEN", "message_id": message_id},
            once_key=f"{turn}:{step}:completed",
        )
        if inp.complete_turn:
            await bus.publish(
                inp.session_id,
                "turn.completed",
                {**base, "message_id": message_id, "content": stored.content, "usage": usage},
                once_key=f"{turn}:completed",
            )
        return GenerateResult(message_id=message_id, usage=usage)

    async def _stream(
        self, inp: GenerateInput, agent: Agent, history: list[Message]
    ) -> tuple[str, dict[str, int]]:
        try:
            client = self.deps.llm.get(agent.provider)
        except LLMNotConfigured as exc:
            raise ApplicationError(str(exc), type="LLMNotConfigured", non_retryable=True) from None
        messages: list[dict[str, Any]] = []
        if agent.system_prompt:
            messages.append({"role": "system", "content": agent.system_prompt})
        messages += [{"role": m.role, "content": m.content} for m in history]
        request: dict[str, Any] = {"model": agent.model, "messages": messages, "stream": True}
        request["stream_options"] = {"include_usage": True}
        if agent.temperature is not None:
            request["temperature"] = agent.temperature
        if agent.max_tokens is not None:
            request["max_tokens"] = agent.max_tokens

        parts: list[str] = []
        usage: dict[str, int] | None = None
        try:
            stream = await client.chat.completions.create(**request)
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                for choice in chunk.choices:
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        await self.deps.bus.publish(
                            inp.session_id,
                            "message.delta",
                            {
                                "turn_id": inp.turn_id,
                                "step": inp.step,
                                "text": choice.delta.content,
                            },
                        )
                        activity.heartbeat(len(parts))
        except openai.APIStatusError as exc:
            if exc.status_code in PERMANENT_STATUS:
                raise ApplicationError(
                    f"the {agent.provider} provider rejected the request "
                    f"(HTTP {exc.status_code}): {_provider_message(exc)}",
                    type="ProviderRejected",
                    non_retryable=True,
                ) from None
            raise
        text = "".join(parts)
        if usage is None:
            prompt = sum(estimate_tokens(m["content"]) for m in messages)
            completion = estimate_tokens(text)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "estimated": 1,
            }
        return text, usage


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return exc.message[:300]
