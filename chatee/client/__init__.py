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
    Conversation,
    ConversationMessage,
    ConversationMessagePage,
    InboxItem,
    ReadMarker,
    Session,
    SessionMessage,
    SessionMessagePage,
    SessionState,
    SyncPage,
    Tokens,
    User,
)
from chatee.client.stream import TurnStream
from chatee.client.sync import SyncClient

__all__ = [
    "Accepted",
    "Agent",
    "ApiError",
    "ChateeClientError",
    "Client",
    "Conflict",
    "Conversation",
    "ConversationMessage",
    "ConversationMessagePage",
    "Forbidden",
    "Frame",
    "HumanRequest",
    "InboxItem",
    "Invalid",
    "Live",
    "MessageDelta",
    "NotFound",
    "RateLimited",
    "ReadMarker",
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
