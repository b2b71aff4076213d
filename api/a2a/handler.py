"""The a2a-sdk `RequestHandler` over `chatee.a2a_tasks`.

The SDK's JSON-RPC dispatcher parses and validates each request (1.0 method names, and the 0.3
ones through its compatibility adapter), calls one method here, and renders the result, the SSE
stream or the error. Chatee is the task store and the executor: a task is a turn run by its
session's workflow, so nothing here keeps tasks in memory and any API process can answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler, validate_request_params
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    A2AError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.task import apply_history_length, validate_history_length
from starlette.requests import Request

from api.a2a import wire
from api.errors import dependency_down
from chatee import a2a_tasks
from chatee.a2a_tasks import Run
from chatee.errors import ChateeError, Conflict, Unavailable
from chatee.logging import get_logger
from chatee.models import Agent
from chatee.services import Services

log = get_logger(__name__)
SCOPE = "chatee"  # the call context's state key: (services, the caller's agent)


class CallContext(DefaultServerCallContextBuilder):
    """The SDK's call context, carrying what the route resolved: the services and the agent."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[SCOPE] = request.state.a2a
        return context


def _scope(context: ServerCallContext) -> tuple[Services, Agent]:
    return context.state[SCOPE]


def a2a_error(exc: ChateeError) -> A2AError:
    """A domain error as the A2A error a client branches on."""
    if exc.code == "task-not-found":
        return TaskNotFoundError(message=exc.detail)
    if exc.code == "task-not-cancelable":
        return TaskNotCancelableError(message=exc.detail)
    if isinstance(exc, Conflict):  # the task or context is in a state that refuses this
        return UnsupportedOperationError(message=exc.detail)
    if isinstance(exc, Unavailable):
        return InternalError(message=exc.detail)
    return InvalidParamsError(message=exc.detail)


@contextmanager
def translated() -> Iterator[None]:
    """Domain errors become A2A errors; anything else an internal error without its details
    (which go to the log), or "retry shortly" while a dependency is away."""
    try:
        yield
    except (A2AError, ChateeError) as exc:
        if isinstance(exc, ChateeError):
            raise a2a_error(exc) from None
        raise
    except Exception as exc:
        name = dependency_down(exc)
        if name is not None:
            raise InternalError(message=f"{name} is unavailable right now; retry shortly") from None
        log.exception("A2A request failed")
        raise InternalError(message="internal error; it has been logged") from None


async def _send(params: SendMessageRequest, context: ServerCallContext) -> Run:
    validate_history_length(params.configuration)
    svc, agent = _scope(context)
    message = params.message
    return await a2a_tasks.send(
        svc,
        agent,
        wire.message_text(params),
        message.message_id,
        message.context_id or None,
        message.task_id or None,
    )


class ChateeRequestHandler(RequestHandler):
    """SendMessage, SendStreamingMessage, GetTask, CancelTask and SubscribeToTask (and their
    0.3 names); the rest of the protocol is refused with the error the spec names for it."""

    @validate_request_params
    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task:
        """The task once it ended or needs input — or at once, with `returnImmediately`."""
        svc, _ = _scope(context)
        with translated():
            run = await _send(params, context)
            view = run.task
            if not params.configuration.return_immediately:
                view = await a2a_tasks.outcome(svc, run)
        return apply_history_length(wire.task(view), params.configuration)

    @validate_request_params
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """The task, then its status and answer updates, until it ends or needs input."""
        svc, _ = _scope(context)
        with translated():
            run = await _send(params, context)
            yield apply_history_length(wire.task(run.task), params.configuration)
            async for change in a2a_tasks.progress(svc, run):
                yield wire.update(change, run.task)

    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        validate_history_length(params)
        svc, agent = _scope(context)
        with translated():
            view = await a2a_tasks.find_task(svc, agent, params.id)
        return apply_history_length(wire.task(view), params)

    @validate_request_params
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        svc, agent = _scope(context)
        with translated():
            view = await a2a_tasks.cancel(svc, agent, params.id)
        return wire.task(view)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        raise UnsupportedOperationError(message="ListTasks is not supported; use GetTask")

    @validate_request_params
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """A running task again: the task, then its updates (the answer rebuilt whole)."""
        svc, agent = _scope(context)
        with translated():
            run = await a2a_tasks.resume(svc, agent, params.id)
            if run.task.state in a2a_tasks.TERMINAL:
                raise UnsupportedOperationError(
                    message=f"task {params.id} is already {run.task.state}; GetTask reads it"
                )
            yield wire.task(run.task)
            async for change in a2a_tasks.progress(svc, run):
                yield wire.update(change, run.task)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        _no_push()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        _no_push()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        _no_push()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        _no_push()

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError(message="this agent has no extended card")


def _no_push(*_: Any) -> NoReturn:
    raise PushNotificationNotSupportedError(
        message="push notifications are not supported; stream or poll GetTask"
    )
