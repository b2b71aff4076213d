"""The Python SDK (`chatee.client`) against real Chatee processes: sign-in, agents, sessions,
streamed turns; a stream that outlives an API restart, tokens that expire mid-session, a
retried step's partial text, and a WebSocket that reconnects and catches up; then the rest of
the API as a user meets it: a group's changes in another member's inbox, a knowledge base an
agent cites, memory, an MCP server's tools, API keys and the account itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatee.client import (
    Client,
    Conflict,
    ConversationMessage,
    Forbidden,
    HumanRequest,
    InboxItem,
    Invalid,
    MessageDelta,
    NotFound,
    StepCompleted,
    StepRetry,
    SyncClient,
    Tokens,
    TurnCompleted,
    TurnEvent,
    TurnStarted,
    Unauthorized,
)
from chatee.devstack import free_port, port_open
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


# -- the rest of the API, as a user meets it -------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "rag"


async def test_a_groups_changes_reach_every_member_as_inbox_entries(stack: Stack) -> None:
    async with (
        await signed_up(stack.base) as ada,
        await signed_up(stack.base) as bob,
        await signed_up(stack.base) as cy,
    ):
        assert ada.user_id and bob.user_id and cy.user_id
        await cy.update_me("Cy")
        group = await ada.create_conversation("group", [bob.user_id], title="trip")
        assert group.role == "owner" and group.created_by == ada.user_id
        after = (await bob.sync()).next_after  # what bob has seen so far

        [added] = await ada.add_members(group.id, [cy.user_id])
        assert (added.id, added.name, added.role) == (cy.user_id, "Cy", "member")
        assert await ada.add_members(group.id, [cy.user_id]) == []  # already in
        promoted = await ada.set_role(group.id, bob.user_id, "admin")
        assert promoted.role == "admin"
        assert (await ada.rename_conversation(group.id, "trip to Porto")).title == "trip to Porto"
        assert (await cy.conversation(group.id)).title == "trip to Porto"
        thread = await bob.create_thread(group.id, "hotels")
        assert thread.parent_id == group.id
        assert [t.title for t in await cy.threads(group.id)] == ["hotels"]

        sent = await ada.send_message(group.id, "lets go on fryday")
        edited = await ada.edit_message(group.id, sent.id, "let's go on Friday")
        assert edited.seq == sent.seq and edited.edited_at is not None
        with pytest.raises(Forbidden):  # only the sender edits
            await bob.edit_message(group.id, sent.id, "no")
        reacted = await bob.react(group.id, sent.id, "👍")
        assert reacted.reactions == [{"emoji": "👍", "count": 1, "me": True}]
        assert (await cy.react(group.id, sent.id, "👍")).reactions[0]["count"] == 2
        assert (await cy.unreact(group.id, sent.id, "👍")).reactions[0]["count"] == 1
        gone = await bob.delete_message(group.id, sent.id)  # an admin moderates
        assert gone.deleted and gone.content == ""
        await bob.remove_member(group.id, cy.user_id)
        assert sorted((m.id, m.role) for m in await ada.members(group.id)) == sorted(
            [(ada.user_id, "owner"), (bob.user_id, "admin")]
        )
        with pytest.raises(NotFound):  # cy is out: the group is not there for her
            await cy.conversation(group.id)
        with pytest.raises(Forbidden):  # only the owner deletes the group
            await bob.delete_conversation(group.id)

        # bob's other devices learn all of it from his inbox, in order
        page = await bob.sync(after=after)
        changes = [(i.kind, i.model_extra.get("member", {}).get("change")) for i in page.items]
        assert changes == [
            ("member", "added"),
            ("member", "role"),
            ("conversation.renamed", None),
            ("message", None),
            ("message.edited", None),
            ("reaction", None),
            ("reaction", None),
            ("reaction", None),
            ("message.deleted", None),
            ("member", "removed"),
        ]
        renamed, edit = page.items[2], page.items[4]
        assert renamed.model_extra["conversation"]["title"] == "trip to Porto"
        # a change carries its message as it is now: edited, then deleted
        assert isinstance(edit.message, ConversationMessage) and edit.message_id == sent.id
        assert edit.message.deleted and edit.message.edited_at is not None
        [latest] = (await bob.history(group.id, limit=1)).items
        assert latest.id == sent.id and latest.deleted

        await bob.remove_member(group.id, bob.user_id)  # leaving
        await ada.delete_conversation(group.id)
        assert [c.id for c in await ada.conversations()] == []
        with pytest.raises(NotFound):
            await ada.conversation(group.id)


async def test_a_knowledge_base_an_agent_cites_and_what_it_remembers(
    stack: Stack,
) -> None:
    async with await signed_up(stack.base) as ada, await signed_up(stack.base) as bob:
        kb = await ada.create_knowledge_base("bees", "keeping them")
        html = (CORPUS / "beekeeping.html").read_bytes()
        doc = await ada.upload_document(kb.id, "beekeeping.html", html)
        assert doc.status == "pending" and doc.media_type == "text/html"
        doc = await ada.wait_for_document(kb.id, doc.id, timeout=60)
        assert doc.status == "ready", doc.error
        assert doc.progress.chunks_embedded == doc.progress.chunks_total > 0
        assert [d.id for d in await ada.documents(kb.id)] == [doc.id]
        assert (await ada.knowledge_base(kb.id)).documents == 1
        hits = await ada.search_knowledge(kb.id, "When should I treat varroa mites?", top_k=3)
        assert 0 < len(hits) <= 3 and hits[0].document_id == doc.id
        with pytest.raises(Conflict):  # only a failed document is retried
            await ada.retry_document(kb.id, doc.id)

        # nobody else sees it, or can use it
        with pytest.raises(NotFound):
            await bob.knowledge_base(kb.id)
        with pytest.raises(NotFound):
            await bob.search_knowledge(kb.id, "varroa")
        theirs = await bob.create_agent("helper", model="scripted")
        with pytest.raises(NotFound):
            await bob.set_agent_knowledge_bases(theirs.id, [kb.id])

        agent = await ada.create_agent(
            "beekeeper", model="scripted", chain=["AG_RAG", "AG_SELF_GEN"]
        )
        linked = await ada.set_agent_knowledge_bases(agent.id, [kb.id])
        assert (await ada.agent_knowledge_bases(agent.id)) == linked
        assert linked.knowledge_base_ids == [kb.id]
        session = await ada.create_session(agent.id)
        turn = ada.stream_turn(session.id, "When should I treat varroa mites?")
        steps = [e async for e in turn if isinstance(e, StepCompleted)]
        assert turn.completed and steps[0].action == "AG_RAG"
        cited = steps[0].citations[0]
        assert (cited["document_id"], cited["document_name"]) == (doc.id, "beekeeping.html")
        reply = (await ada.session_messages(session.id)).items[0]
        assert (reply.role, reply.content) == ("assistant", turn.text)
        assert reply.citations and reply.citations[0]["chunk_id"] == cited["chunk_id"]
        await ada.delete_session(session.id)
        with pytest.raises(NotFound):
            await ada.session(session.id)

        # a new version of the document replaces the old; deleting it empties the search
        new = await ada.replace_document(kb.id, doc.id, "beekeeping.md", b"# Bees\n\nWax.\n")
        assert new.version == 2
        assert (await ada.wait_for_document(kb.id, doc.id, timeout=60)).status == "ready"
        assert [h.text for h in await ada.search_knowledge(kb.id, "wax")] == ["# Bees\n\nWax."]
        await ada.delete_document(kb.id, doc.id)
        assert await ada.search_knowledge(kb.id, "wax") == []
        await ada.delete_knowledge_base(kb.id)
        assert await ada.knowledge_bases() == []
        assert (await ada.agent_knowledge_bases(agent.id)).knowledge_base_ids == []

        # memory: the agent's own, and what it keeps about you
        rule = await ada.add_agent_memory(agent.id, "rule", "answer in French", scope="agent")
        name = await ada.add_agent_memory(agent.id, "name", "Ada")
        again = await ada.add_my_memory(agent.id, "name", "Ada Lovelace")  # the same key
        assert again.id == name.id and again.scope == "user"
        assert {(m.key, m.value, m.scope) for m in await ada.agent_memory(agent.id)} == {
            ("rule", "answer in French", "agent"),
            ("name", "Ada Lovelace", "user"),
        }
        assert [m.key for m in await ada.agent_memory(agent.id, scope="agent")] == ["rule"]
        assert [m.id for m in await ada.my_memory()] == [name.id]
        await ada.delete_my_memory(name.id)
        await ada.delete_agent_memory(agent.id, rule.id)
        assert await ada.agent_memory(agent.id) == []
        with pytest.raises(NotFound):
            await ada.delete_my_memory(name.id)


@pytest.fixture(scope="module")
def mcp_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The demo MCP server over streamable HTTP, requiring a bearer token: (its URL, token)."""
    port, token = free_port(), "demo-" + uuid.uuid4().hex
    log = tmp_path_factory.mktemp("mcp") / "demo.log"
    demo = str(REPO / "chatee" / "devtools" / "mcp_demo.py")
    argv = [sys.executable, demo, "--transport", "streamable-http", "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "--token", token], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", token
    finally:
        proc.kill()
        proc.wait()


async def test_an_mcp_server_is_registered_connected_and_its_tools_called(
    stack: Stack, mcp_demo: tuple[str, str]
) -> None:
    url, token = mcp_demo
    async with await signed_up(stack.base) as ada, await signed_up(stack.base) as bob:
        headers = {"Authorization": f"Bearer {token}"}
        server = await ada.create_mcp_server("demo", "streamable_http", url=url, headers=headers)
        assert server.headers == {"Authorization": "***"} and server.status == "registered"
        connected = await ada.connect_mcp_server(server.id)
        assert connected.status == "connected" and connected.tools_count > 0
        tools = {t.name: t for t in await ada.mcp_tools(server.id)}
        assert {"add", "echo", "fail"} <= set(tools)
        assert set(tools["add"].input_schema["properties"]) == {"a", "b"}

        summed = await ada.call_mcp_tool(server.id, "add", {"a": 2, "b": 3})
        assert not summed.is_error and float(summed.text) == 5
        failed = await ada.call_mcp_tool(server.id, "fail")
        assert failed.is_error and "on purpose" in failed.text
        with pytest.raises(NotFound):
            await ada.call_mcp_tool(server.id, "no such/tool")
        with pytest.raises(NotFound):
            await bob.mcp_tools(server.id)

        # renamed: the stored token is kept, so it still connects
        renamed = await ada.update_mcp_server(server.id, name="demo2", tool_policy={"add": "deny"})
        assert (renamed.name, renamed.tool_policy, renamed.headers) == (
            "demo2", {"add": "deny"}, {"Authorization": "***"}
        )  # fmt: skip
        assert (await ada.connect_mcp_server(server.id)).status == "connected"
        assert [s.name for s in await ada.mcp_servers()] == ["demo2"]
        await ada.delete_mcp_server(server.id)
        with pytest.raises(NotFound):
            await ada.mcp_server(server.id)


def test_api_keys_and_the_account_from_the_blocking_client(stack: Stack) -> None:
    name = username()
    with SyncClient(stack.base) as ada, SyncClient(stack.base) as laptop:
        ada.register(name, PASSWORD)
        laptop.login(name, PASSWORD)
        agent = ada.create_agent("helper", model="scripted")

        key = ada.create_api_key("ci", ["agents:read"])
        assert key.key.startswith("chk_") and key.key.startswith(key.prefix)
        [listed] = ada.api_keys()
        assert (listed.id, listed.scopes) == (key.id, ["agents:read"])
        assert "key" not in listed.model_dump()  # the secret is shown once
        with SyncClient(stack.base, api_key=key.key) as service:
            assert [a.id for a in service.agents()] == [agent.id]
            with pytest.raises(Forbidden):  # its scopes only
                service.create_agent("other", model="scripted")
            with pytest.raises(Forbidden):  # a key cannot manage keys
                service.api_keys()
            ada.delete_api_key(key.id)
            with pytest.raises(Unauthorized):
                service.agents()

        assert [p.status for p in ada.presence([ada.user_id])] == ["offline"]  # no WebSocket

        # a new password signs the other logins out; this one goes on
        with pytest.raises(Forbidden):
            ada.change_password("wrong password", "a new password")
        ada.change_password(PASSWORD, "a new password")
        assert ada.me().username == name
        with pytest.raises(Unauthorized):
            laptop.me()
        assert laptop.tokens is None
        laptop.login(name, "a new password")

        ada.delete_account("a new password")
        assert ada.tokens is None
        with pytest.raises(Unauthorized):
            laptop.me()
        with pytest.raises(Unauthorized):
            laptop.login(name, "a new password")
