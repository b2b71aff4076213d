"""What the OpenAI-compatible layer costs: first-token and full-turn latency of the same agent
through `POST /v1/chat/completions` (streaming, with the real `openai` SDK) next to Chatee's own
`POST /api/v1/chat/stream` (through Chatee's Python SDK, `Client.stream_turn`), turns
alternating between the two in one run.

    python -m bench.protocol_latency [--turns 100] [--out FILE]

Starts the same world as bench/turn_latency.py (Temporal dev server, Redis, SQLite, the scripted
LLM, one worker and one API). Each turn is timed from just before the request to the first text
and to the end of the stream (native: the first `MessageDelta`, then the turn's final event:
what a Python user of each SDK sees). Prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.turn_latency import AGENT_FIELDS, forget_events, log, signed_up, summary, world
from chatee.client import Client, MessageDelta

WARMUP = 5


async def native_turn(chatee: Client, session_id: str, text: str) -> tuple[float, float]:
    start, first = time.perf_counter(), None
    async for event in chatee.stream_turn(session_id, text):  # ends at turn.completed/failed
        if first is None and isinstance(event, MessageDelta):
            first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


async def openai_turn(
    client: openai.AsyncOpenAI, model: str, session_id: str, text: str
) -> tuple[float, float]:
    start, first = time.perf_counter(), None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        stream=True,
        extra_headers={"X-Chatee-Session-Id": session_id},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


async def run(turns: int) -> dict[str, Any]:
    async with world([]) as w, httpx.AsyncClient(base_url=w.stack.base, timeout=60) as http:
        user = await signed_up(http)
        native_agent = await user.create_agent("bench-native", **AGENT_FIELDS)
        native = await user.create_session(native_agent.id)
        openai_agent = await user.create_agent("bench-openai", **AGENT_FIELDS)
        other = await user.create_session(openai_agent.id)
        results: dict[str, dict[str, list[float]]] = {
            "api_v1_chat_stream": {"first_token": [], "full_turn": []},
            "v1_chat_completions_stream": {"first_token": [], "full_turn": []},
        }
        assert user.tokens is not None  # signed in; /v1 takes the same bearer token
        async with openai.AsyncOpenAI(
            base_url=f"{w.stack.base}/v1", api_key=user.tokens.access_token, max_retries=0
        ) as client:
            log(f"{turns} turns each way, alternating")
            for i in range(WARMUP + turns):
                text = f"benchmark turn number {i} please"
                a = await native_turn(user, native.id, text)
                b = await openai_turn(client, "bench-openai", other.id, text)
                if i < WARMUP:
                    continue
                for name, (first, full) in (
                    ("api_v1_chat_stream", a),
                    ("v1_chat_completions_stream", b),
                ):
                    results[name]["first_token"].append(first)
                    results[name]["full_turn"].append(full)
        if w.redis_url.endswith(":6379/0"):  # the machine's Redis: leave it as it was
            await forget_events(w.redis_url, [native.id, other.id])
        report = {
            name: {what: summary(samples) for what, samples in series.items()}
            for name, series in results.items()
        }
        overhead = {
            what: round(
                report["v1_chat_completions_stream"][what]["p50"]
                - report["api_v1_chat_stream"][what]["p50"],
                2,
            )
            for what in ("first_token", "full_turn")
        }
        return {
            "benchmark": "protocol_latency",
            "turns": turns,
            "latency_ms": report,
            "openai_layer_p50_overhead_ms": overhead,
            "notes": w.notes
            + ["each side has a session of its own; /v1 names it with X-Chatee-Session-Id"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.turns))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
