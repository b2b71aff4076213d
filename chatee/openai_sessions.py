"""OpenAI-style calls over agent sessions (README, "OpenAI-compatible API").

An OpenAI client names a `model` and sends the whole conversation every time; Chatee keeps the
conversation itself, in a durable session. So a call is: the agent the model names, the session
the call continues (named explicitly, or found by its history), and the call's last user message
run there as one turn. The wire shapes live in `api/openai/`; this module sees plain values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatee import agent_sessions, session_store
from chatee.agent_sessions import Accepted, Done, Failed, turn_ending
from chatee.agents import find_owned_agent
from chatee.errors import Invalid, NotFound
from chatee.ids import parse_id
from chatee.models import Agent, Message, Session, Turn
from chatee.services import Services
from workflows.events import MESSAGE_DELTA, STEP_RETRY

HISTORY_ROLES = ("user", "assistant")
CANDIDATES = 5  # sessions whose history is compared in full, newest first
TITLE_CHARS = 80


@dataclass(frozen=True)
class Said:
    """One message of the request as text: `role` is user, assistant or system."""

    role: str
    content: str


@dataclass(frozen=True)
class Started:
    """A call's turn, accepted by its session's actor."""

    agent: Agent
    session_id: int
    accepted: Accepted


@dataclass(frozen=True)
class Delta:
    text: str


# -- the model ----------------------------------------------------------------------------------


def model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model `{model}` does not exist or you do not have access to it.",
        "model_not_found",
        param="model",
    )


async def resolve_model(db: AsyncSession, user_id: int, model: str) -> Agent:
    """The caller's agent that `model` names: its name (unique per owner), else its id."""
    stmt = select(Agent).where(Agent.owner_id == user_id, Agent.name == model).order_by(Agent.id)
    agent = (await db.execute(stmt.limit(1))).scalar_one_or_none()
    if agent is None and model.isdigit() and len(model) <= 19:
        agent = await find_owned_agent(db, user_id, int(model))
    if agent is None:
        raise model_not_found(model)
    return agent


# -- the session --------------------------------------------------------------------------------


def split(messages: Sequence[Said]) -> tuple[list[Said], str]:
    """The history before the last user message (system messages left out), and that message:
    the one new thing a call says."""
    if not messages or messages[-1].role != "user":
        raise Invalid("the last message must be a user message", "invalid_value", param="messages")
    earlier = [m for m in messages[:-1] if m.role in HISTORY_ROLES and m.content]
    return earlier, messages[-1].content


async def choose_session(
    svc: Services, db: AsyncSession, agent: Agent, named: str | None, earlier: list[Said], text: str
) -> Session:
    """The session `named` (header or metadata), else one whose history is `earlier`, else a
    new one."""
    if named is not None:
        session = await agent_sessions.owned_session(db, agent.owner_id, parse_id(named, "session"))
        if session.agent_id != agent.id:
            raise Invalid(
                f"session {named} belongs to another model", "session_model_mismatch", param="model"
            )
        return session
    found = await matching_session(db, agent, earlier)
    if found is not None:
        return found
    return await agent_sessions.start_session(svc, db, agent, text[:TITLE_CHARS] or None)


async def matching_session(db: AsyncSession, agent: Agent, earlier: list[Said]) -> Session | None:
    """The newest open session of `agent` whose user/assistant history equals `earlier`. A call
    without history starts a conversation, so it matches nothing. The newest message narrows the
    candidates in SQL; the full history is compared here (byte-exact, whatever the collation)."""
    if not earlier:
        return None
    last = earlier[-1]
    holding = (
        select(Message.session_id)
        .join(Session, Session.id == Message.session_id)
        .where(
            Session.user_id == agent.owner_id,
            Session.agent_id == agent.id,
            Session.status != "closed",
            Message.role == last.role,
            Message.content == last.content,
        )
    )
    stmt = select(Session).where(Session.id.in_(holding)).order_by(Session.id.desc())
    for session in (await db.execute(stmt.limit(CANDIDATES))).scalars():
        if await history(db, session.id) == earlier:
            return session
    return None


async def history(db: AsyncSession, session_id: int) -> list[Said]:
    """What an OpenAI client holds of a session: its user messages and final replies in turn
    order (notes, tool calls and their results stay inside Chatee)."""
    stmt = (
        select(Message)
        .where(Message.session_id == session_id, Message.role.in_(HISTORY_ROLES))
        .order_by(Message.turn_id, Message.id)
    )
    rows = (await db.execute(stmt)).scalars()
    return [Said(m.role, m.content) for m in rows if m.content and not m.tool_calls]


# -- the turn -----------------------------------------------------------------------------------


async def start(
    svc: Services,
    user_id: int,
    model: str,
    messages: Sequence[Said],
    named: str | None,
    previous: str | None = None,
) -> Started:
    """Run the call's last user message as a turn of the session it continues: the session of
    response `previous` (Responses API), else the one `named`, else as `choose_session` finds."""
    earlier, text = split(messages)
    agent_sessions.check_size(svc, text)
    async with svc.sessionmaker() as db:
        agent = await resolve_model(db, user_id, model)
        if previous is not None:
            session, _ = await response_session(db, user_id, previous, "previous_response_id")
            named = str(session.id)
        session = await choose_session(svc, db, agent, named, earlier, text)
    return await continue_session(svc, agent, session.id, text)


async def continue_session(svc: Services, agent: Agent, session_id: int, text: str) -> Started:
    accepted = await agent_sessions.submit_turn(svc, agent.owner_id, session_id, text, None)
    return Started(agent, session_id, accepted)


async def reply(svc: Services, started: Started) -> AsyncIterator[Delta | Done | Failed]:
    """The turn's reply as text pieces, then how it ended.

    A retried step (`step.retry`) generates its text again from the start, but text already
    handed out cannot be taken back: each step's text is handed out once, so after a retry only
    what goes beyond the text already sent for that step comes out. A retry that says the same
    thing (the usual case) reads exactly as if nothing happened."""
    accepted = started.accepted
    sent: dict[Any, str] = {}  # per step: the text handed out
    attempt: dict[Any, str] = {}  # per step: the text of its current attempt
    events = agent_sessions.turn_events(svc, started.session_id, accepted.after, accepted.turn_id)
    async for event in events:
        if event.event == MESSAGE_DELTA:
            step = event.data.get("step")
            attempt[step] = attempt.get(step, "") + event.data["text"]
            extra = attempt[step][len(sent.get(step, "")) :]
            if extra:
                sent[step] = attempt[step]
                yield Delta(extra)
        elif event.event == STEP_RETRY:
            attempt[event.data.get("step")] = ""
        else:
            ending = turn_ending(event)
            if ending is not None:
                yield ending


def usage_counts(usage: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens of a turn's usage, summed over its LLM steps."""
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


# -- responses (the Responses API): a response is a turn ----------------------------------------


@dataclass(frozen=True)
class TurnView:
    """A turn as `GET /v1/responses/{id}` shows it."""

    response_id: str
    model: str
    status: str  # in_progress | completed | failed | cancelled
    content: str
    usage: dict[str, Any]
    error: Failed | None
    created_at: datetime


def response_id(session_id: int, turn_id: int) -> str:
    """The session is in the id, so a response is found (and continued) without a scan."""
    return f"resp_{session_id}_{turn_id}"


def parse_response_id(raw: str, param: str) -> tuple[int, int]:
    prefix, _, rest = raw.partition("_")
    session, _, turn = rest.partition("_")
    if prefix != "resp" or not all(p.isdigit() and len(p) <= 19 for p in (session, turn)):
        raise NotFound(f"response {raw!r} not found", param=param)
    return int(session), int(turn)


async def response_session(
    db: AsyncSession, user_id: int, raw: str, param: str
) -> tuple[Session, int]:
    """The caller's session that response `raw` belongs to (to continue it), and its turn."""
    session_id, turn_id = parse_response_id(raw, param)
    session = await session_store.owned_session(db, user_id, session_id)
    asked = select(Message.id).where(
        Message.session_id == session_id, Message.turn_id == turn_id, Message.role == "user"
    )
    if session is None or (await db.execute(asked.limit(1))).first() is None:
        raise NotFound(f"response {raw!r} not found", param=param)
    return session, turn_id


async def find_response(svc: Services, user_id: int, raw: str) -> TurnView:
    """A response as it stands: queued or running, or how its turn ended."""
    async with svc.sessionmaker() as db:
        session, turn_id = await response_session(db, user_id, raw, "response_id")
        agent = await db.get(Agent, session.agent_id)
        stmt = (
            select(Message)
            .where(Message.session_id == session.id, Message.turn_id == turn_id)
            .order_by(Message.id)
        )
        rows = list((await db.execute(stmt)).scalars())
        turn = await db.get(Turn, turn_id)
    replies = [m for m in rows if m.role == "assistant" and m.content and not m.tool_calls]
    status, error = "in_progress", None
    if turn is not None:
        status = turn.status if turn.status in ("completed", "cancelled") else "failed"
        if status != "completed":
            error = Failed(turn.error_type or turn.status, turn.error_type or turn.status)
    return TurnView(
        response_id=raw,
        model=agent.name if agent else str(session.agent_id),
        status=status,
        content=replies[-1].content if replies and status == "completed" else "",
        usage=(turn.usage if turn else None) or {},
        error=error,
        created_at=rows[0].created_at,
    )
