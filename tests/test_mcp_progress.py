"""Chatee's `/mcp` server on a long turn: a call that asks for progress hears the turn while it
runs (MCP progress notifications: step names and the reply's text), before the result."""

from __future__ import annotations

import uuid

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from chatee.client import Client as Chatee
from chatee.devtools.llm_server import LLMServerThread
from tests.support import Stack


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_tool_call_reports_progress_before_its_result(
    mode: str, chatee: Chatee, stack: Stack, llm: LLMServerThread
) -> None:
    agent = await chatee.create_agent("slow", system_prompt="You are helpful.", model="scripted")
    marker = uuid.uuid4().hex
    chunks = [f"w{i} " for i in range(6)]
    llm.llm.script(marker, [{"chunks": chunks, "chunk_delay_ms": 100}] * 2)
    heard: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, message))

    assert chatee.tokens is not None
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {chatee.tokens.access_token}"},
        timeout=httpx2.Timeout(30, read=120),
    )
    async with Client(
        streamable_http_client(f"{stack.base}/mcp", http_client=http), mode=mode
    ) as c:
        result = await c.call_tool(
            f"slow_{agent.id}", {"message": f"go {marker}"}, progress_callback=on_progress
        )
        assert result.is_error is False, result
        assert result.content[0].text == "".join(chunks)
        assert heard, "no progress notification arrived before the result"
        notes = [note for _, note in heard]
        assert any(n and n.startswith("step ") and "AG_SELF_GEN" in n for n in notes)
        assert "".join(n for n in notes if n in chunks) == "".join(chunks)  # the text, streamed
        progress = [p for p, _ in heard]
        assert progress == sorted(progress) and len(set(progress)) == len(progress)

        # without a progress token the call is answered all the same
        quiet = await c.call_tool(f"slow_{agent.id}", {"message": f"go {marker}"})
        assert quiet.content[0].text == "".join(chunks)
