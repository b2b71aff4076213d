"""The Python SDK (`chatee.client`) against real Chatee processes: sign-in, agents, sessions,
streamed turns; a stream that outlives an API restart, tokens that expire mid-session, a
retried step's partial text, and a WebSocket that reconnects and catches up."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatee.client import (
    Client,
    HumanRequest,
    InboxItem,
    Invalid,
    MessageDelta,
    NotFound,
    StepRetry,
    SyncClient,
    Tokens,
    TurnCompleted,
    TurnEvent,
    TurnStarted,
    Unauthorized,
)
from chatee.devtools.llm_server import LLMServerThread
from tests.support import ChateeProcess, Stack

PASSWORD = "correct horse"
TOKEN_TTL = 3  # seconds: access tokens expire many times during these tests


def username() -> str:
    return f"sdk-{uuid.uuid4().hex[:12]}"


async def signed_up(base: str, **kwargs: object) -> Client:
    client = Client(base, **kwargs)  # type: ignore[arg-type]
    await client.register(username(), PASSWORD)
    return client


async def test_sign_in_agents_sessions_and_a_streamed_turn(stack: Stack) -> None:
    name = username()
    async with Client(stack.base) as chatee:
        registered = await chatee.register(name, PASSWORD)
        with pytest.raises(Unauthorized) as refused:
            await chatee.login(name, "wrong password")
        assert refused.value.status == 401 and "wrong" in refused.value.detail
        assert (await chatee.login(name.upper(), PASSWORD)).user_id == registered.user_id
        me = await chatee.update_me("Ada L.")
        assert (me.id, me.username, me.display_name) == (registered.user_id, name, "Ada L.")
        assert [u.id for u in await chatee.find_users("ada l")] == [me.id]

        agent = await chatee.create_agent("helper", system_prompt="Be brief.", model="scripted")
        assert [a.name for a in await chatee.agents()] == ["helper"]
        assert (await chatee.find_agent("helper")).id == agent.id
        renamed = await chatee.update_agent(agent.id, name="echoer")
        assert renamed.name == "echoer" and renamed.system_prompt == "Be brief."
        with pytest.raises(Invalid) as invalid:
            await chatee.create_agent("bad", chain=["AG_NOPE"])
        assert invalid.value.status == 422

        session = await chatee.create_session(agent.id, title="first")
        assert session.agent_id == agent.id and session.title == "first"
        turn = chatee.stream_turn(session.id, "hello")
        events = [event async for event in turn]
        assert isinstance(events[0], TurnStarted)
        assert any(isinstance(e, MessageDelta) for e in events)
        assert isinstance(events[-1], TurnCompleted) and turn.completed
        assert turn.text == events[-1].content == "echo: hello"
        assert {e.turn_id for e in events} == {turn.turn_id}

        page = await chatee.session_messages(session.id)
        assert [(m.role, m.content) for m in page.items] == [
            ("assistant", "echo: hello"),
            ("user", "hello"),
        ]
        assert (await chatee.session(session.id)).state is not None
        await chatee.delete_agent(agent.id)
        with pytest.raises(NotFound) as missing:
            await chatee.agent(agent.id)
        assert missing.value.code == "not-found"


async def test_a_human_request_is_answered_and_the_turn_goes_on(stack: Stack) -> None:
    async with await signed_up(stack.base) as chatee:
        chain = [{"type": "AG_CALL_HUMAN", "prompt": "OK to book?"}, "AG_SELF_GEN"]
        agent = await chatee.create_agent("booker", model="scripted", chain=chain)
        session = await chatee.create_session(agent.id)
        turn = chatee.stream_turn(session.id, "book a table")
        async for event in turn:
            if isinstance(event, HumanRequest):
                assert event.prompt == "OK to book?"
                await chatee.human_reply(session.id, event.request_id, "yes")
        assert turn.completed and turn.text == "echo: yes"  # the model saw the answer


async def test_a_retried_step_drops_its_partial_text(stack: Stack, llm: LLMServerThread) -> None:
    marker = uuid.uuid4().hex
    llm.llm.script(
        marker, [{"chunks": ["partial "], "drop_after_chunks": 2}, {"text": "whole answer"}]
    )
    async with await signed_up(stack.base) as chatee:
        agent = await chatee.create_agent("helper", model="scripted")
        session = await chatee.create_session(agent.id)
        turn = chatee.stream_turn(session.id, marker)
        shown = ""  # what a UI shows: deltas appended, a retried step's text erased
        async for event in turn:
            if isinstance(event, MessageDelta):
                shown += event.text
            elif isinstance(event, StepRetry):
                assert event.dropped == "partial "
                shown = shown.removesuffix(event.dropped)
        assert turn.completed
        assert turn.text == shown == "whole answer"


def test_the_blocking_client_streams_a_turn(stack: Stack) -> None:
    with SyncClient(stack.base) as chatee:
        chatee.register(username(), PASSWORD)
        agent = chatee.create_agent("helper", model="scripted")
        session = chatee.create_session(agent.id)
        turn = chatee.stream_turn(session.id, "hi there")
        names = [event.event for event in turn]
        assert names[0] == "turn.started" and names[-1] == "turn.completed"
        assert turn.text == "echo: hi there"


# -- an API process that dies, tokens that expire -----------------------------------------------


@dataclass
class Killable:
    """An isolated stack whose API process a test may kill and restart."""

    stack: Stack
    api: ChateeProcess

    def kill_api(self) -> None:
        self.api.kill()
        self.stack.processes.remove(self.api)

    def start_api(self) -> None:
        self.api = self.stack.start_api()  # same port: clients find it where it was


@pytest.fixture(scope="module")
def killable(isolated_stacks: Callable[[dict[str, str]], Stack]) -> Iterator[Killable]:
    stack = isolated_stacks({"CHATEE_JWT_TTL_SECONDS": str(TOKEN_TTL)})
    stack.start_worker()
    yield Killable(stack, stack.start_api())


async def replayed(chatee: Client, session_id: str, turn_id: str) -> list[TurnEvent]:
    """The turn's events as the session's stream retains them."""
    events: list[TurnEvent] = []
    async for event in chatee.follow(session_id, after="0"):
        if event.turn_id == turn_id:
            events.append(event)
            if isinstance(event, TurnCompleted):
                return events
    raise AssertionError("the replay ended before the turn did")


async def test_a_turn_streams_on_across_an_api_restart(
    killable: Killable, llm: LLMServerThread
) -> None:
    marker = uuid.uuid4().hex
    chunks = [f"part{i} " for i in range(30)]
    llm.llm.script(marker, [{"chunks": chunks, "chunk_delay_ms": 200}])
    refreshed: list[Tokens | None] = []
    async with await signed_up(killable.stack.base, on_tokens=refreshed.append) as chatee:
        agent = await chatee.create_agent("helper", model="scripted")
        session = await chatee.create_session(agent.id)
        turn = chatee.stream_turn(session.id, marker)
        events = []
        async for event in turn:
            events.append(event)
            if isinstance(event, MessageDelta) and event.text == "part2 ":
                killable.kill_api()  # mid-stream: the connection drops
                await asyncio.to_thread(killable.start_api)  # longer than a token lives

        assert turn.reconnects >= 1
        assert turn.completed and turn.text == "".join(chunks) == events[-1].content
        # every event of the turn exactly once, in order: what the stream retains
        whole = await replayed(chatee, session.id, turn.turn_id or "")
        assert [e.id for e in events] == [e.id for e in whole]
        assert len(refreshed) > 1  # the access token expired during the restart and was renewed


async def test_an_expired_access_token_is_refreshed_once_transparently(
    killable: Killable,
) -> None:
    saved: list[Tokens | None] = []
    first = await signed_up(killable.stack.base, on_tokens=saved.append)
    stale = first.tokens
    assert stale is not None
    agent = await first.create_agent("helper", model="scripted")
    await asyncio.sleep(TOKEN_TTL + 1)
    session = await first.create_session(agent.id)  # refreshed before it was sent
    assert len(saved) == 2 and saved[-1] != stale
    latest = saved[-1]
    assert latest is not None
    await first.aclose()

    # a client that cannot know the token expired (no expiry saved): refused, refreshes, retries
    unknowing = Tokens(stale.user_id, stale.access_token, latest.refresh_token, refresh_at=None)
    renewed: list[Tokens | None] = []
    async with Client(killable.stack.base, tokens=unknowing, on_tokens=renewed.append) as again:
        turn = await again.stream_turn(session.id, "still there?").run()
        assert turn.text == "echo: still there?"
        assert len(renewed) == 1 and renewed[0] is not None
        assert renewed[0].access_token != stale.access_token

    # the spent refresh token is worthless now (and presenting it ends that login)
    spent = Tokens(stale.user_id, stale.access_token, latest.refresh_token, refresh_at=None)
    async with Client(killable.stack.base, tokens=spent) as thief:
        with pytest.raises(Unauthorized):
            await thief.agents()
        assert thief.tokens is None


async def test_the_websocket_reconnects_and_catches_up_without_gaps_or_duplicates(
    killable: Killable, tmp_path: Path
) -> None:
    other_api = Stack(env=killable.stack.env, tmp=tmp_path)  # the sender's API stays up
    other_api.start_api()
    try:
        async with (
            await signed_up(killable.stack.base) as ada,
            await signed_up(other_api.base) as bob,
        ):
            assert ada.user_id is not None
            chat = await bob.create_conversation("private", [ada.user_id])
            live = ada.live(after=0)
            arrived: asyncio.Queue[InboxItem] = asyncio.Queue()

            async def listen() -> None:
                async for item in live:
                    if isinstance(item, InboxItem):
                        arrived.put_nowait(item)

            async def take(count: int) -> list[InboxItem]:
                return [await arrived.get() for _ in range(count)]

            listener = asyncio.create_task(listen())
            await asyncio.wait_for(live.connected.wait(), 30)
            for n in range(1, 4):
                await bob.send_message(chat.id, f"m{n}")
            received = await asyncio.wait_for(take(3), 30)

            killable.kill_api()  # ada's socket drops; bob goes on writing meanwhile
            for n in range(4, 7):
                await bob.send_message(chat.id, f"m{n}")
            await asyncio.to_thread(killable.start_api)
            await bob.send_message(chat.id, "m7")
            received += await asyncio.wait_for(take(4), 60)
            await asyncio.sleep(0.5)  # time for a duplicate to show up, if one were coming
            await live.close()
            listener.cancel()

            assert arrived.empty()
            assert [i.message.content for i in received if i.message] == [
                f"m{n}" for n in range(1, 8)
            ]
            assert [i.inbox_seq for i in received] == list(range(1, 8))
            assert live.reconnects >= 1 and live.cursor == 7
            await ada.mark_read(chat.id, 7)
            [listed] = await ada.conversations()
            assert listed.id == chat.id and listed.unread == 0
            history = await ada.history(chat.id, limit=5)
            assert [m.content for m in history.items] == ["m7", "m6", "m5", "m4", "m3"]
            assert history.next_before_seq == 3
    finally:
        other_api.stop()
