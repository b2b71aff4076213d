"""The Chatee Python SDK: `Client` (async, on httpx) and `SyncClient` (the same, blocking).

    async with Client("http://127.0.0.1:8080") as chatee:
        await chatee.login("ada", "correct horse")
        agent = await chatee.create_agent("helper", model="gpt-4o-mini")
        session = await chatee.create_session(agent.id)
        turn = chatee.stream_turn(session.id, "hello")
        async for event in turn:
            ...
        print(turn.text)

A client of the HTTP API only: it imports nothing of the server but the event names.
"""

from chatee.client.client import Client
from chatee.client.errors import (
    ApiError,
    ChateeClientError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    StreamLost,
    Unauthorized,
    Unavailable,
)
from chatee.client.events import (
    HumanRequest,
    MessageDelta,
    StepCompleted,
    StepRetry,
    StepStarted,
    ToolCall,
    ToolResult,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from chatee.client.live import Frame, Live
from chatee.client.models import (
    Accepted,
    Agent,
    AgentKnowledgeBases,
    ApiKey,
    Conversation,
    ConversationMessage,
    ConversationMessagePage,
    Document,
    InboxItem,
    KnowledgeBase,
    McpConnection,
    McpServer,
    McpTool,
    McpToolResult,
    Member,
    MemoryEntry,
    NewApiKey,
    Presence,
    Progress,
    ReadMarker,
    SearchHit,
    Session,
    SessionMessage,
    SessionMessagePage,
    SessionState,
    SyncPage,
    Tokens,
    ToolCallRecord,
    User,
)
from chatee.client.stream import TurnStream
from chatee.client.sync import SyncClient

__all__ = [
    "Accepted",
    "Agent",
    "AgentKnowledgeBases",
    "ApiError",
    "ApiKey",
    "ChateeClientError",
    "Client",
    "Conflict",
    "Conversation",
    "ConversationMessage",
    "ConversationMessagePage",
    "Document",
    "Forbidden",
    "Frame",
    "HumanRequest",
    "InboxItem",
    "Invalid",
    "KnowledgeBase",
    "Live",
    "McpConnection",
    "McpServer",
    "McpTool",
    "McpToolResult",
    "Member",
    "MemoryEntry",
    "MessageDelta",
    "NewApiKey",
    "NotFound",
    "Presence",
    "Progress",
    "RateLimited",
    "ReadMarker",
    "SearchHit",
    "Session",
    "SessionMessage",
    "SessionMessagePage",
    "SessionState",
    "StepCompleted",
    "StepRetry",
    "StepStarted",
    "StreamLost",
    "SyncClient",
    "SyncPage",
    "Tokens",
    "ToolCall",
    "ToolCallRecord",
    "ToolResult",
    "TurnCompleted",
    "TurnEvent",
    "TurnFailed",
    "TurnStarted",
    "TurnStream",
    "Unauthorized",
    "Unavailable",
    "User",
]
