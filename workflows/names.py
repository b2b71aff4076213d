"""The Temporal contract, in one place: task queues, workflow ids, search attributes, and the
name of every workflow, update, signal, query and activity.

Workers register these names, workflows and the API call them. They are recorded in workflow
histories, so renaming one breaks the replay of runs already started (tests/histories).
Plain constants: safe to import from workflows.
"""

from __future__ import annotations

# -- task queues ----------------------------------------------------------------------------

AGENTS_QUEUE = "chatee-agents"
LLM_QUEUE = "chatee-llm"
TOOLS_QUEUE = "chatee-tools"
RAG_QUEUE = "chatee-rag"
MESSAGES_QUEUE = "chatee-messages"

# `chatee worker --queue <short name>`
QUEUES: dict[str, str] = {
    "agents": AGENTS_QUEUE,
    "llm": LLM_QUEUE,
    "tools": TOOLS_QUEUE,
    "rag": RAG_QUEUE,
    "messages": MESSAGES_QUEUE,
}

# -- search attributes (keyword) ------------------------------------------------------------

AGENT_ID_ATTRIBUTE = "ChateeAgentId"
USER_ID_ATTRIBUTE = "ChateeUserId"
SESSION_ID_ATTRIBUTE = "ChateeSessionId"
SEARCH_ATTRIBUTES = (AGENT_ID_ATTRIBUTE, USER_ID_ATTRIBUTE, SESSION_ID_ATTRIBUTE)

# -- workflows, and their ids ---------------------------------------------------------------

SESSION_WORKFLOW = "AgentSession"  # on AGENTS_QUEUE
TASK_WORKFLOW = "AgentTask"  # on AGENTS_QUEUE, a child of a session's turn
FANOUT_WORKFLOW = "MessageFanout"  # on MESSAGES_QUEUE
RELAY_WORKFLOW = "AgentReplyRelay"  # on MESSAGES_QUEUE
CONVERSATION_AGENTS_WORKFLOW = "ConversationAgentTurns"  # on MESSAGES_QUEUE
INGEST_WORKFLOW = "IngestDocument"  # on RAG_QUEUE


def session_workflow_id(session_id: int | str) -> str:
    return f"session-{session_id}"


def task_workflow_id(turn_id: int | str, step: int | str) -> str:
    return f"task-{turn_id}-{step}"


def fanout_workflow_id(message_id: int | str) -> str:
    return f"fanout-{message_id}"


def relay_workflow_id(turn_id: int | str) -> str:
    return f"relay-{turn_id}"


def conversation_agents_workflow_id(message_id: int | str) -> str:
    return f"agents-{message_id}"


def ingest_workflow_id(document_id: int | str) -> str:
    return f"ingest-{document_id}"


# -- AgentSession's handlers (AgentTask has HUMAN_REPLY too) -----------------------------

SEND_MESSAGE_UPDATE = "send_message"
CANCEL_TURN_SIGNAL = "cancel_turn"
HUMAN_REPLY_SIGNAL = "human_reply"
CLOSE_SIGNAL = "close"
STATE_QUERY = "state"

# -- activities, by the queue that runs them ------------------------------------------------

# chatee-llm
GENERATE_REPLY = "GenerateReply"
DECIDE_OPTION = "DecideOption"
# chatee-tools
CALL_MCP_TOOL = "CallMcpTool"
CALL_REMOTE_AGENT = "CallRemoteAgent"  # AG_CALL_AG to a remote A2A agent (`a2a_url`)
# chatee-rag
RETRIEVE = "Retrieve"
LOAD_MEMORY = "LoadMemory"
STORE_MEMORY = "StoreMemory"
PREPARE_DOCUMENT = "PrepareDocument"
EMBED_CHUNKS = "EmbedChunks"
FINISH_DOCUMENT = "FinishDocument"
# chatee-messages
STORE_REPLY = "StoreReply"
STORE_TOOL_RESULT = "StoreToolResult"
RECORD_HUMAN_REPLY = "RecordHumanReply"
PREPARE_AGENT_TASK = "PrepareAgentTask"
FINISH_TURN = "FinishTurn"
PLAN_FANOUT = "PlanFanout"
DELIVER_BATCH = "DeliverBatch"
FINISH_FANOUT = "FinishFanout"
RELAY_AGENT_TURN = "RelayAgentTurn"
POST_AGENT_REPLY = "PostAgentReply"
PREPARE_AGENT_TURNS = "PrepareAgentTurns"
OFFER_AGENT_TURN = "OfferAgentTurn"
FOLLOW_AGENT_TURN = "FollowAgentTurn"
POST_AGENT_OUTCOME = "PostAgentOutcome"
# chatee-messages, and a local activity of the workflows on chatee-agents
PUBLISH_TURN_EVENT = "PublishTurnEvent"
