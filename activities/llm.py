"""LLM steps: `GenerateReply` (AG_SELF_GEN, streaming, tool calling) and `DecideOption`
(AG_SELF_DECIDE, structured output), through the official `openai` SDK.

Idempotent per (turn, step): one-shot events carry a dedupe key, the reply is stored under
`<turn>:<step>:assistant`, and a retry first tells clients to drop that step's partial text.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import announce, complete, heartbeating
from activities.turns import finish_turn
from chatee import session_store
from chatee.llm import PERMANENT_STATUS, LLMNotConfigured, estimate_tokens, rejection_message
from chatee.metrics import observe_llm, record_tokens
from chatee.models import Agent, Message
from chatee.services import Services
from workflows import names
from workflows.events import MESSAGE_DELTA
from workflows.executor import add_usage
from workflows.types import FinishTurnInput, StepInput, StepResult, ToolCallRef


class LLMActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.GENERATE_REPLY)
    async def generate(self, inp: StepInput) -> StepResult:
        await announce(self.services.bus, inp)
        key = f"{inp.turn_id}:{inp.step}:assistant"
        agent, history = await self._load(inp)
        tools = await self._tools(agent) if inp.allow_tools else []
        stored = next((m for m in history if m.idempotency_key == key), None)
        if stored is None:  # a previous attempt may have stored it before failing to report
            async with heartbeating():
                text, calls, usage = await self._stream(inp, agent, history, tools)
            record_tokens(inp.provider or agent.provider, inp.model or agent.model, usage)
            stored = await session_store.store_message_once(
                self.services.sessionmaker,
                idempotency_key=key,
                session_id=int(inp.session_id),
                role="assistant",
                content=text,
                turn_id=int(inp.turn_id),
                usage=usage,
                tool_calls=calls or None,
            )
        message_id, usage = str(stored.id), stored.usage or {}
        refs = [_ref(call, tools) for call in stored.tool_calls or []]
        await complete(
            self.services.bus, inp, "asked for tools" if refs else "replied", message_id=message_id
        )
        finished = inp.complete_turn and not refs
        if finished:
            total = add_usage(inp.prior_usage, usage)
            await finish_turn(
                self.services,
                FinishTurnInput(inp.session_id, inp.turn_id, "completed", message_id, total),
                content=stored.content,
            )
        return StepResult(
            summary=f"message {message_id}",
            message_id=message_id,
            usage=usage,
            tool_calls=refs,
            turn_completed=finished,
        )

    @activity.defn(name=names.DECIDE_OPTION)
    async def decide(self, inp: StepInput) -> StepResult:
        """The model picks one of the step's options; the chain branches on it."""
        await announce(self.services.bus, inp)
        agent, history = await self._load(inp)
        options: list[str] = inp.params["options"]
        question = inp.params.get("question") or "Which option fits the conversation best?"
        messages = openai_messages(agent, history, int(inp.turn_id))
        messages.append(
            {
                "role": "system",
                "content": f"{question}\nOptions: {', '.join(options)}.\n"
                'Answer only with JSON: {"choice": "<one of the options>"}.',
            }
        )
        schema = {
            "type": "object",
            "properties": {"choice": {"type": "string", "enum": options}},
            "required": ["choice"],
            "additionalProperties": False,
        }
        request = self._request(inp, agent, messages)
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "decision", "schema": schema, "strict": True},
        }
        async with heartbeating():
            response = await self._call(
                agent, inp, lambda client: client.chat.completions.create(**request)
            )
        text = response.choices[0].message.content or ""
        choice = _match_option(text, options)
        if choice is None:
            raise ApplicationError(
                f"the model chose none of {options}: {text[:100]!r}", type="InvalidDecision"
            )
        usage = usage_of(response.usage) or _estimate(messages, text)
        record_tokens(inp.provider or agent.provider, inp.model or agent.model, usage)
        await complete(self.services.bus, inp, f"chose {choice}", choice=choice)
        return StepResult(f"chose {choice}", usage=usage, choice=choice)

    # -- helpers ----------------------------------------------------------------------------

    async def _load(self, inp: StepInput) -> tuple[Agent, list[Message]]:
        async with self.services.sessionmaker() as db:
            agent = await load_agent(db, inp.agent_id)
            history = await session_store.turn_context(
                db,
                int(inp.session_id),
                int(inp.turn_id),
                self.services.settings.limits.context_messages,
            )
        return agent, history

    async def _tools(self, agent: Agent) -> list[Any]:
        if not agent.mcp_servers:
            return []
        from chatee.mcp import agent_tools

        async with self.services.sessionmaker() as db:
            return await agent_tools(db, agent, self.services.mcp)

    def _request(
        self, inp: StepInput, agent: Agent, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": inp.model or agent.model, "messages": messages}
        if agent.temperature is not None:
            request["temperature"] = agent.temperature
        if agent.max_tokens is not None:
            request["max_tokens"] = agent.max_tokens
        return request

    async def _call(self, agent: Agent, inp: StepInput, make: Any) -> Any:
        provider, model = inp.provider or agent.provider, inp.model or agent.model
        client = llm_client(self.services, provider)
        # a span and a latency sample per request (chatee.tracing, chatee.metrics)
        with observe_llm(provider, model, session_id=inp.session_id, turn_id=inp.turn_id):
            try:
                return await make(client)
            except openai.APIStatusError as exc:
                raise _classify(exc, provider) from None

    async def _stream(
        self, inp: StepInput, agent: Agent, history: list[Message], tools: list[Any]
    ) -> tuple[str, list[dict[str, str]], dict[str, int]]:
        messages = openai_messages(agent, history, int(inp.turn_id), inp.params.get("instructions"))
        request = self._request(inp, agent, messages)
        request.update(stream=True, stream_options={"include_usage": True})
        if tools:
            from chatee.mcp import openai_tools

            request["tools"] = openai_tools(tools)
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: dict[str, int] | None = None

        async def consume(client: openai.AsyncOpenAI) -> None:
            nonlocal usage
            stream = await client.chat.completions.create(**request)
            async for chunk in stream:
                usage = usage_of(chunk.usage) or usage
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        parts.append(delta.content)
                        await self.services.bus.publish(
                            inp.session_id,
                            MESSAGE_DELTA,
                            {"turn_id": inp.turn_id, "step": inp.step, "text": delta.content},
                        )
                    for tc in delta.tool_calls or []:
                        call = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        call["id"] = tc.id or call["id"]
                        if tc.function:
                            call["name"] += tc.function.name or ""
                            call["arguments"] += tc.function.arguments or ""

        # a transient failure (dropped stream, 5xx, 429) raises: Temporal retries the step
        await self._call(agent, inp, consume)
        text = "".join(parts)
        tool_calls = [calls[i] for i in sorted(calls)]
        for i, call in enumerate(tool_calls):
            call["id"] = call["id"] or f"call_{inp.turn_id}_{inp.step}_{i}"
        return text, tool_calls, usage or _estimate(messages, text)


def openai_messages(
    agent: Agent, history: list[Message], turn_id: int, instructions: str | None = None
) -> list[dict[str, Any]]:
    """The stored conversation in the chat-completions shape. Notes from earlier turns (RAG,
    memory) are left out; a tool result is kept only next to the call it answers."""
    out: list[dict[str, Any]] = []
    if agent.system_prompt:
        out.append({"role": "system", "content": agent.system_prompt})
    answered = {m.tool_call_id for m in history if m.role == "tool"}
    offered: set[str] = set()
    for m in history:
        if m.role == "system":
            if m.turn_id == turn_id:
                out.append({"role": "system", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            calls = [c for c in m.tool_calls if c["id"] in answered]
            entry: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if calls:
                entry["tool_calls"] = [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"] or "{}"}}
                    for c in calls
                ]  # fmt: skip
                offered.update(c["id"] for c in calls)
            if entry["content"] or calls:
                out.append(entry)
        elif m.role == "tool":
            if m.tool_call_id in offered:
                out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
            elif m.turn_id == turn_id:
                out.append({"role": "system", "content": f"Tool result: {m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    if instructions:
        out.append({"role": "system", "content": instructions})
    return out


def _ref(call: dict[str, str], tools: list[Any]) -> ToolCallRef:
    tool = next((t for t in tools if t.name == call["name"]), None)
    if tool is None:
        return ToolCallRef(call["id"], call["name"], None, call["name"], "unknown")
    return ToolCallRef(call["id"], call["name"], str(tool.server_id), tool.tool, tool.policy)


def _classify(exc: openai.APIStatusError, provider: str) -> Exception:
    if exc.status_code in PERMANENT_STATUS:
        return ApplicationError(
            f"the {provider} provider rejected the request "
            f"(HTTP {exc.status_code}): {rejection_message(exc)}",
            type="ProviderRejected",
            non_retryable=True,
        )
    return exc


async def load_agent(db: AsyncSession, agent_id: str) -> Agent:
    agent = await db.get(Agent, int(agent_id))
    if agent is None:
        raise ApplicationError("the agent was deleted", type="AgentNotFound", non_retryable=True)
    return agent


def llm_client(services: Services, provider: str) -> openai.AsyncOpenAI:
    """The provider's client; a provider that is not configured fails the step for good."""
    try:
        return services.llm.get(provider)
    except LLMNotConfigured as exc:
        raise ApplicationError(str(exc), type="LLMNotConfigured", non_retryable=True) from None


def usage_of(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _estimate(messages: list[dict[str, Any]], text: str) -> dict[str, int]:
    """tiktoken's count when the provider reports none."""
    prompt = sum(estimate_tokens(str(m.get("content") or "")) for m in messages)
    completion = estimate_tokens(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _match_option(text: str, options: list[str]) -> str | None:
    try:
        choice = json.loads(text).get("choice")
    except (ValueError, AttributeError):
        choice = text.strip().strip('"')
    if choice in options:
        return choice
    lowered = {o.lower(): o for o in options}
    return lowered.get(str(choice).lower().strip())
