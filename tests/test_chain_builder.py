"""ChainBuilder builds the same templates an agent's `chain` holds, and the steps the executor
inserts mid-turn."""

from __future__ import annotations

import pytest

from workflows.chain import (
    AG_CALL_HUMAN,
    AG_SELF_GEN,
    AG_USE_MCP,
    DEFAULT_CHAIN,
    Action,
    ChainBuilder,
    ChainError,
    parse_chain,
)


def test_a_bare_action_is_its_name_and_unset_parameters_are_left_out() -> None:
    assert ChainBuilder().memory_load().rag().self_gen().template() == [
        "AG_MEMORY_LOAD",
        "AG_RAG",
        "AG_SELF_GEN",
    ]
    assert DEFAULT_CHAIN == ["AG_SELF_GEN"] == ChainBuilder().self_gen().template()


def test_parameters_and_branches_become_the_template() -> None:
    chain = (
        ChainBuilder()
        .rag(top_k=4)
        .self_decide(
            ["ask", "answer"],
            question="Ask the expert?",
            branches={"ask": ChainBuilder().call_agent("42", task="help"), "answer": ["AG_ACCEPT"]},
        )
        .call_human("Go on?", timeout_seconds=60, on_timeout="continue")
        .memory_store(key="topic", value="answers", scope="user")
        .use_mcp("7", "search", {"q": "x"})
        .accept("done")
    )
    assert chain.template() == [
        {"type": "AG_RAG", "top_k": 4},
        {
            "type": "AG_SELF_DECIDE",
            "options": ["ask", "answer"],
            "question": "Ask the expert?",
            "branches": {
                "ask": [{"type": "AG_CALL_AG", "agent_id": "42", "task": "help"}],
                "answer": ["AG_ACCEPT"],
            },
        },
        {"type": "AG_CALL_HUMAN", "prompt": "Go on?", "timeout_seconds": 60,
         "on_timeout": "continue"},
        {"type": "AG_MEMORY_STORE", "key": "topic", "value": "answers", "scope": "user"},
        {"type": "AG_USE_MCP", "server_id": "7", "tool": "search", "arguments": {"q": "x"}},
        {"type": "AG_ACCEPT", "text": "done"},
    ]  # fmt: skip
    assert chain.build() == parse_chain(chain.template())


def test_build_validates_like_a_template() -> None:
    with pytest.raises(ChainError, match="at least two"):
        ChainBuilder().self_decide(["only"]).build()
    with pytest.raises(ChainError, match="non-empty list"):
        ChainBuilder().build()


def test_inserted_steps_keep_their_parameters_as_given() -> None:
    """What the executor inserts for a tool round: internal parameters, None included, in
    order, and no validation (they are not part of any template)."""
    steps = (
        ChainBuilder()
        .step(AG_CALL_HUMAN, prompt="Allow?", approval_for="call_1")
        .step(AG_USE_MCP, tool_call_id="call_1", server_id=None, tool="x", policy="unknown")
        .step(AG_SELF_GEN, instructions="be brief", round=1)
    )
    assert steps.actions() == [
        Action(AG_CALL_HUMAN, {"prompt": "Allow?", "approval_for": "call_1"}),
        Action(AG_USE_MCP, {"tool_call_id": "call_1", "server_id": None, "tool": "x",
                            "policy": "unknown"}),
        Action(AG_SELF_GEN, {"instructions": "be brief", "round": 1}),
    ]  # fmt: skip
    assert list(steps.actions()[2].params) == ["instructions", "round"]
    with pytest.raises(ChainError):
        steps.build()
