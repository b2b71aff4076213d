"""Chatee's plain task values in A2A's protobuf types (a2a-sdk), and back: the agent card, a
task, a stream event, an incoming message's text."""

from __future__ import annotations

from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    HTTPAuthSecurityScheme,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol
from a2a.utils.errors import ContentTypeNotSupportedError, InvalidParamsError

from chatee.a2a_tasks import Answer, Said, Status, TaskView
from chatee.models import Agent

TEXT = "text/plain"
SCHEME = "bearer"
STATES = {
    "submitted": TaskState.TASK_STATE_SUBMITTED,
    "working": TaskState.TASK_STATE_WORKING,
    "input-required": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "canceled": TaskState.TASK_STATE_CANCELED,
}
ROLES = {"user": Role.ROLE_USER, "agent": Role.ROLE_AGENT}


def card(agent: Agent, url: str, version: str) -> AgentCard:
    """The agent's card: one JSON-RPC endpoint speaking A2A 1.0 and 0.3, bearer auth."""
    description = agent.system_prompt.strip()[:500] or f"The Chatee agent {agent.name}."
    return AgentCard(
        name=agent.name,
        description=description,
        version=version,
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding=TransportProtocol.JSONRPC, protocol_version=v)
            for v in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        security_schemes={
            SCHEME: SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer",
                    bearer_format="JWT",
                    description="a Chatee access token, or an API key (chk_…) with the "
                    "`chat` scope",
                )
            )
        },
        security_requirements=[SecurityRequirement(schemes={SCHEME: StringList()})],
        default_input_modes=[TEXT],
        default_output_modes=[TEXT],
        skills=[
            AgentSkill(
                id="chat",
                name=agent.name,
                description=description,
                tags=["chat"],
                input_modes=[TEXT],
                output_modes=[TEXT],
            )
        ],
    )


def message_text(request: SendMessageRequest) -> str:
    """The text of an incoming message: its text parts, joined by blank lines."""
    message = request.message
    if message.role == Role.ROLE_AGENT:
        raise InvalidParamsError(message="a message to the agent has role ROLE_USER")
    texts: list[str] = []
    for part in message.parts:
        if part.WhichOneof("content") != "text":
            raise ContentTypeNotSupportedError(message="this agent accepts text parts only")
        texts.append(part.text)
    return "\n\n".join(texts)


def said(item: Said, view: TaskView) -> Message:
    return _message(item.message_id, item.role, item.text, view.task_id, view.context_id)


def _message(message_id: str, role: str, text: str, task_id: str, context_id: str) -> Message:
    return Message(
        message_id=message_id,
        role=ROLES[role],
        parts=[Part(text=text)],
        task_id=task_id,
        context_id=context_id,
    )


def status(state: str, note: str | None, task_id: str, context_id: str) -> TaskStatus:
    """A task status; the question of an input-required task, or why one failed, is a message
    from the agent."""
    out = TaskStatus(state=STATES[state])
    out.timestamp.GetCurrentTime()
    if note:
        note_id = f"{task_id}-{state}"
        out.message.CopyFrom(_message(note_id, "agent", note, task_id, context_id))
    return out


def artifact_id(task_id: str) -> str:
    return f"{task_id}-answer"


def task(view: TaskView) -> Task:
    out = Task(
        id=view.task_id,
        context_id=view.context_id,
        status=status(view.state, view.note, view.task_id, view.context_id),
        history=[said(item, view) for item in view.history],
    )
    if view.answer is not None:
        out.artifacts.append(
            Artifact(
                artifact_id=artifact_id(view.task_id), name="answer", parts=[Part(text=view.answer)]
            )
        )
    return out


def update(
    change: Status | Answer, view: TaskView
) -> TaskStatusUpdateEvent | TaskArtifactUpdateEvent:
    """A stream event: the task's new status, or a piece of its answer (one artifact, `answer`,
    appended to — or replaced when a retried step said something else)."""
    if isinstance(change, Status):
        return TaskStatusUpdateEvent(
            task_id=view.task_id,
            context_id=view.context_id,
            status=status(change.state, change.note, view.task_id, view.context_id),
        )
    return TaskArtifactUpdateEvent(
        task_id=view.task_id,
        context_id=view.context_id,
        artifact=Artifact(
            artifact_id=artifact_id(view.task_id), name="answer", parts=[Part(text=change.text)]
        ),
        append=not change.whole,
        last_chunk=change.last,
    )
