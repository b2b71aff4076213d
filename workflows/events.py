"""The events of a session's stream (chatee/bus.py), one name each.

Workflows and activities publish them; the API relays them (SSE, WebSocket `agent.event`
frames, the MCP server). Clients match on these strings, so they are part of the public API.
Plain constants: workflows import this module too.
"""

from __future__ import annotations

TURN_STARTED = "turn.started"  # the turn's first step began
STEP_STARTED = "step.started"
MESSAGE_DELTA = "message.delta"  # a piece of the reply's text, as the model streams it
TOOL_CALL = "tool.call"
TOOL_RESULT = "tool.result"
STEP_COMPLETED = "step.completed"
STEP_RETRY = "step.retry"  # the step runs again (retry or failover): drop its partial output
HUMAN_REQUEST = "human.request"  # the turn waits for a human reply (AG_CALL_HUMAN, approvals)
TURN_COMPLETED = "turn.completed"
TURN_FAILED = "turn.failed"

# every turn ends with exactly one of these; a follower of one turn stops after it
FINAL = frozenset({TURN_COMPLETED, TURN_FAILED})
