"""Agents as members of conversations, against real processes: every inbox keeps each
conversation's `seq` order through agent turns, worker and API kills; sends are answered while
no worker runs; a failed agent turn leaves a system message that offline members sync."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from chatee.devtools.llm_server import LLMServerThread
from tests.conftest import MESSAGING_ENV
from tests.messaging_support import WsClient, all_messages, group, quick_users, send, sync_all
from tests.support import Api, Stack


class Watcher(WsClient):
    """A socket whose inbox entries (every kind) can be listed."""

    def entries(self) -> list[tuple[int, str, str | None]]:
        return [entry(self.inbox[s]) for s in sorted(self.inbox)]


def entry(item: dict[str, Any]) -> tuple[int, str, str | None]:
    """What an inbox entry is: its inbox_seq, kind and message id."""
    return item["inbox_seq"], item.get("kind", "message"), (item.get("message") or {}).get("id")


def messages_of(inbox: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inbox's new-message entries (other kinds — edits, reactions — point at old seqs)."""
    return [i for i in inbox if i.get("kind", "message") == "message"]


def assert_in_order(inbox: list[dict[str, Any]]) -> None:
    """Gap-free `inbox_seq`, and each conversation's messages in `seq` order, once each."""
    assert [i["inbox_seq"] for i in inbox] == list(range(1, len(inbox) + 1))
    seqs: dict[str, list[int]] = defaultdict(list)
    for item in messages_of(inbox):
        seqs[item["conversation_id"]].append(item["message"]["seq"])
    for conversation, got in seqs.items():
        assert got == sorted(set(got)), f"conversation {conversation} out of order: {got}"


async def until(check: Any, within: float = 180, every: float = 0.3) -> Any:
    """Poll over HTTP until `check()` returns something truthy (nothing to wait on instead)."""
    for _ in range(int(within / every)):
        if found := await check():
            return found
        await asyncio.sleep(every)
    raise AssertionError("never happened")


async def add_agent(owner: Api, conversation_id: str, agent_id: str) -> None:
    r = await owner.request(
        "POST", f"/conversations/{conversation_id}/members", json={"members": [agent_id]}
    )
    assert r.status_code in (200, 201), r.text


async def private_with(api: Api, agent_id: str) -> dict[str, Any]:
    r = await api.request("POST", "/conversations", json={"type": "private", "members": [agent_id]})
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture
def agent_stack(
    isolated_stacks: Any, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    """Two API processes and a worker in a Temporal namespace of their own (the test kills
    them), on the parametrised database."""
    first = isolated_stacks({**MESSAGING_ENV, "CHATEE_DATABASE_URL": database_url})
    second = Stack(env=first.env, tmp=tmp_path_factory.mktemp("agents-b"))
    first.start_worker()
    first.start_api()
    second.start_api()
    yield first, second
    second.stop()


SENDS = 12


# MariaDB, the production database, only: a minute of kills and waits; SQLite's ordering is
# in the large-group test below, its kills in tests/test_messaging_durability.py
@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_inboxes_keep_seq_order_through_agent_turns_and_killed_processes(
    agent_stack: tuple[Stack, Stack], database_url: str, stack_env: dict[str, str]
) -> None:
    doomed, survivor = agent_stack
    async with (
        httpx.AsyncClient(base_url=doomed.base, timeout=30) as to_doomed,
        httpx.AsyncClient(base_url=survivor.base, timeout=30) as to_survivor,
    ):
        alice, bob, carol, dave = await quick_users(
            database_url, stack_env["CHATEE_JWT_SECRET"], [to_survivor, to_doomed], 4
        )
        agent = await alice.create_agent(name="helper")
        chat = await group(alice, [bob, carol, dave])
        await add_agent(alice, chat["id"], agent["id"])
        private = await private_with(alice, agent["id"])
        watcher = await Watcher(survivor.base, dave.token).connect(after=0)

        acked: dict[str, str] = {}  # client_msg_id -> message id
        worker_down, api_down = asyncio.Event(), asyncio.Event()
        while_down: list[str] = []

        async def sender(api: Api, conversation_id: str, text: str) -> None:
            for i in range(SENDS):
                key = f"{api.user_id}-{i}"
                body = {"content": text.format(i=i), "client_msg_id": key}
                first = to_doomed if i % 2 == 0 and not api_down.is_set() else to_survivor
                for client in (first, to_survivor, to_survivor):
                    with contextlib.suppress(httpx.TransportError):
                        r = await client.post(
                            f"/api/v1/conversations/{conversation_id}/messages",
                            json=body,
                            headers=api.headers,
                        )
                        assert r.status_code == 201, r.text
                        acked[key] = r.json()["id"]
                        if worker_down.is_set():
                            while_down.append(key)
                        break
                else:
                    raise AssertionError(f"{key} was never accepted")
                await asyncio.sleep(0.05)

        senders = [
            asyncio.create_task(sender(bob, chat["id"], "plain {i}")),
            asyncio.create_task(sender(carol, chat["id"], "@helper question {i}")),
            asyncio.create_task(sender(alice, private["id"], "private {i}")),
        ]
        await until(lambda: asyncio.sleep(0, len(acked) >= 9), within=60, every=0.05)
        worker = doomed.processes[0]
        worker.kill()  # SIGKILL, mid-traffic: agent turns are running
        worker_down.set()
        await until(lambda: asyncio.sleep(0, len(while_down) >= 6), within=60, every=0.05)
        doomed.processes[1].kill()  # and an API process
        api_down.set()
        await asyncio.gather(*senders)
        assert len(acked) == 3 * SENDS
        # every send made while no worker ran was answered (a send never waits on the agent)
        assert len(while_down) >= 6
        doomed.start_worker()

        people = [Api(to_survivor, u.token, u.user_id) for u in (alice, bob, carol, dave)]
        alice, bob, carol, dave = people

        async def settled(conversation_id: str, count: int) -> list[dict[str, Any]] | None:
            found = await all_messages(alice, conversation_id)
            streaming = [m for m in found if (m.get("meta") or {}).get("streaming")]
            return found if len(found) >= count and not streaming else None

        # each mention and each private message got exactly one answer
        group_messages = await until(lambda: settled(chat["id"], 3 * SENDS))
        private_messages = await until(lambda: settled(private["id"], 2 * SENDS))
        await asyncio.sleep(2)  # anything posted twice would show up by now
        group_messages = await all_messages(alice, chat["id"])
        private_messages = await all_messages(alice, private["id"])
        assert len(group_messages) == 3 * SENDS and len(private_messages) == 2 * SENDS
        for history in (group_messages, private_messages):
            assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
        for history, asked in ((group_messages, "@helper question"), (private_messages, "private")):
            replies = [m["content"] for m in history if m["sender_type"] == "agent"]
            assert all(r.startswith("echo: ") and asked in r for r in replies)
            assert sorted(int(r.rsplit(" ", 1)[1]) for r in replies) == list(range(SENDS))
        assert set(acked.values()) <= {m["id"] for m in group_messages + private_messages}

        expected = {
            alice.user_id: {m["id"] for m in group_messages + private_messages},
            **{u.user_id: {m["id"] for m in group_messages} for u in (bob, carol, dave)},
        }
        for member in people:

            async def complete(member: Api = member) -> list[dict[str, Any]] | None:
                inbox = await sync_all(member)
                got = {i["message"]["id"] for i in messages_of(inbox)}
                return inbox if got >= expected[member.user_id] else None

            inbox = await until(complete, within=60)
            assert_in_order(inbox)
            assert sorted(i["message"]["id"] for i in messages_of(inbox)) == sorted(
                expected[member.user_id]
            )
        inbox = await sync_all(dave)
        await watcher.wait_inbox(len(inbox))
        assert not watcher.dupes and not watcher.gaps
        assert watcher.entries() == [entry(i) for i in inbox]
        await watcher.close()


@pytest.fixture
def large_group_stack(isolated_stacks: Any, database_url: str) -> Iterator[Stack]:
    """An API and a worker where a group of more than three people fans out through the
    `MessageFanout` workflow, two members a batch: many batches of many items in flight."""
    stack = isolated_stacks(
        {
            **MESSAGING_ENV,
            "CHATEE_DATABASE_URL": database_url,
            "CHATEE_MESSAGING__FANOUT_WORKFLOW_THRESHOLD": "3",
            "CHATEE_MESSAGING__FANOUT_BATCH_SIZE": "2",
        }
    )
    stack.start_worker()
    stack.start_api()
    yield stack


def assert_changes_in_order(inbox: list[dict[str, Any]]) -> None:
    """A change comes after the message it is about, and an edit before the deletion."""
    seen: dict[str, list[str]] = defaultdict(list)  # message id -> kinds of its changes
    delivered = set()
    for item in inbox:
        if item["kind"] == "message":
            delivered.add(item["message"]["id"])
        elif item.get("message_id"):
            about = item["message_id"]
            assert about in delivered, f"{item['kind']} before its message {about}"
            seen[about].append(item["kind"])
    for about, kinds in seen.items():
        if "message.deleted" in kinds:
            assert kinds[-1] == "message.deleted", f"{about}: {kinds}"


ROUNDS = 6


async def test_a_large_group_keeps_every_inbox_in_seq_order_through_its_workflow_fan_out(
    large_group_stack: Stack, database_url: str, stack_env: dict[str, str]
) -> None:
    """Concurrent plain sends, @mentions, agent replies, reactions, edits and deletions in a
    group whose items fan out through separate workflows, batch by batch: every member's
    inbox still holds the group's messages in `seq` order, each change after its message."""
    async with httpx.AsyncClient(base_url=large_group_stack.base, timeout=30) as client:
        people = await quick_users(database_url, stack_env["CHATEE_JWT_SECRET"], [client], 7)
        alice, bob, carol, dave = people[:4]
        agent = await alice.create_agent(name="helper")
        chat = await group(alice, people[1:])
        await add_agent(alice, chat["id"], agent["id"])
        base = f"/conversations/{chat['id']}/messages"

        async def plain(api: Api) -> None:
            for i in range(ROUNDS):
                await send(api, chat["id"], f"plain {i}")

        async def mentions() -> None:
            for i in range(ROUNDS):
                sent = await send(carol, chat["id"], f"@helper question {i}")
                r = await alice.request("PUT", f"{base}/{sent['id']}/reactions/👍")
                assert r.status_code == 200, r.text

        async def second_thoughts() -> None:
            for i in range(ROUNDS):
                sent = await send(bob, chat["id"], f"draft {i}")
                r = await bob.request("PATCH", f"{base}/{sent['id']}", json={"content": "edited"})
                assert r.status_code == 200, r.text
                if i % 2 == 0:
                    r = await bob.request("DELETE", f"{base}/{sent['id']}")
                    assert r.status_code == 200, r.text

        await asyncio.gather(plain(dave), plain(people[4]), mentions(), second_thoughts())

        async def settled() -> list[dict[str, Any]] | None:
            found = await all_messages(alice, chat["id"])
            streaming = [m for m in found if (m.get("meta") or {}).get("streaming")]
            return found if len(found) >= 5 * ROUNDS and not streaming else None

        history = await until(settled, within=120)
        shown = [(m["seq"], m["sender_type"], m["content"]) for m in history]
        assert [m["seq"] for m in history] == list(range(1, 5 * ROUNDS + 1)), shown
        ids = {m["id"] for m in history}
        for member in people:

            async def complete(member: Api = member) -> list[dict[str, Any]] | None:
                inbox = await sync_all(member)
                got = {i["message"]["id"] for i in messages_of(inbox)}
                changes = [i for i in inbox if i["kind"] in ("reaction", "message.deleted")]
                done = got >= ids and len(changes) >= ROUNDS + ROUNDS // 2
                return inbox if done else None

            inbox = await until(complete, within=60)
            assert_in_order(inbox)
            assert_changes_in_order(inbox)


async def test_a_failed_agent_turn_posts_a_system_message_that_offline_members_sync(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
    llm: LLMServerThread,
) -> None:
    alice, bob = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 2)
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await add_agent(alice, chat["id"], agent["id"])
    marker, secret = uuid.uuid4().hex, f"sk-live-{uuid.uuid4().hex}"
    llm.llm.script(
        marker,
        [{"error": {"status": 401, "message": f"Incorrect API key provided: {secret}"}}],
    )
    asked = await send(alice, chat["id"], f"@helper {marker}")

    # bob has no socket open: he learns it from /sync alone
    async def notice() -> list[dict[str, Any]] | None:
        items = messages_of(await sync_all(bob))
        return items if any(i["message"]["sender_type"] == "system" for i in items) else None

    items = await until(notice, within=60)
    assert [i["message"]["id"] for i in items][0] == asked["id"]
    posted = items[1]["message"]
    assert posted["sender_type"] == "system" and posted["seq"] == asked["seq"] + 1
    assert posted["content"] == "helper could not answer: its model provider refused the request."
    assert posted["meta"]["agent_id"] == agent["id"]
    seen = json.dumps(items)
    assert secret not in seen and "Incorrect API key" not in seen
    assert not re.search(r"\b401\b", seen)  # the status (ids are longer numbers: 255…401)
    assert [m["id"] for m in await all_messages(bob, chat["id"])] == [asked["id"], posted["id"]]


async def test_agents_are_listed_with_their_names_for_every_member(
    clients: list[httpx.AsyncClient], sqlite_url: str, stack_env: dict[str, str]
) -> None:
    alice, bob = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 2)
    agent = await alice.create_agent(name="sage")
    chat = await group(alice, [bob])
    await add_agent(alice, chat["id"], agent["id"])
    r = await bob.request("GET", f"/conversations/{chat['id']}/members")
    assert r.status_code == 200, r.text
    agents = [m for m in r.json() if m["kind"] == "agent"]
    assert [(m["id"], m["name"]) for m in agents] == [(agent["id"], "sage")]


def apply_deltas(message: dict[str, Any], frames: list[dict[str, Any]]) -> str:
    """What a client shows: the message as loaded, then the deltas it does not hold yet."""
    text, held = message["content"], message["meta"]["deltas"]
    deltas = [
        f for f in frames if f["type"] == "message.delta" and f["message_id"] == message["id"]
    ]
    for frame in sorted(deltas, key=lambda f: f["index"]):
        if frame["index"] > held:
            assert frame["index"] == held + 1 and frame["offset"] <= len(text)
            text, held = text[: frame["offset"]] + frame["text"], frame["index"]
    return text


async def test_a_socket_that_joins_mid_reply_gets_the_text_so_far_then_the_rest(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
    llm: LLMServerThread,
) -> None:
    alice, bob = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 2)
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await add_agent(alice, chat["id"], agent["id"])
    marker = uuid.uuid4().hex
    words = [f"word{n} " for n in range(20)]
    llm.llm.script(marker, [{"chunks": words, "chunk_delay_ms": 200}])
    early = await Watcher(messaging_apis[0].base, alice.token).connect(after=0)
    asked = await send(alice, chat["id"], f"@helper {marker}")
    # a few words in, bob opens a socket on the other API process
    first = await early.wait_for(lambda f: f["type"] == "message.delta" and f["index"] >= 3, 60)
    reply_id = first["message_id"]
    late = await Watcher(messaging_apis[1].base, bob.token).connect(after=0)

    def finished(f: dict[str, Any]) -> bool:
        return (
            f["type"] == "inbox.event"
            and f.get("kind") == "message.edited"
            and (f["message"]["id"] == reply_id)
        )

    final = (await late.wait_for(finished, 60))["message"]
    assert final["content"] == "".join(words) and "streaming" not in final["meta"]
    joined = next(i["message"] for i in late.inbox.values() if entry(i)[2] == reply_id)
    assert joined["meta"]["streaming"] is True and joined["sender_id"] == agent["id"]
    assert 0 < len(joined["content"]) < len(final["content"])  # it joined mid-reply
    assert apply_deltas(joined, late.frames) == final["content"]
    # the first socket saw it all live, from the empty message on
    started = next(i["message"] for i in early.inbox.values() if entry(i)[2] == reply_id)
    assert apply_deltas(started, early.frames) == final["content"]
    await early.wait_for(finished, 60)

    # one message, in history and in /sync (with the edit that finished it)
    history = await all_messages(bob, chat["id"])
    assert [(m["id"], m["sender_type"]) for m in history] == [
        (asked["id"], "user"), (reply_id, "agent")
    ]  # fmt: skip
    assert history[1]["content"] == final["content"] and "streaming" not in history[1]["meta"]
    synced = [entry(i)[1:] for i in await sync_all(bob) if entry(i)[2] in (asked["id"], reply_id)]
    assert synced == [
        ("message", asked["id"]), ("message", reply_id), ("message.edited", reply_id)
    ]  # fmt: skip
    for socket in (early, late):
        assert not socket.dupes and not socket.gaps
        await socket.close()


async def conversation_session(owner: Api, conversation_id: str) -> dict[str, Any]:
    sessions = (await owner.request("GET", "/sessions")).json()
    return next(s for s in sessions if s["title"] == f"group {conversation_id}")


async def streaming_reply(
    owner: Api, socket: Watcher, chat: dict[str, Any], llm: LLMServerThread
) -> tuple[dict[str, Any], str]:
    """Ask the agent something it answers slowly; return the question once its reply has
    begun to stream, and the reply's message id."""
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": [f"old{n} " for n in range(40)], "chunk_delay_ms": 150}])
    asked = await send(owner, chat["id"], f"@helper {marker}")
    first = await socket.wait_for(lambda f: f["type"] == "message.delta" and f["index"] >= 2, 60)
    return asked, first["message_id"]


async def test_deleting_the_question_mid_reply_cancels_the_turn_and_its_reply(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
    llm: LLMServerThread,
) -> None:
    alice, bob = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 2)
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await add_agent(alice, chat["id"], agent["id"])
    socket = await Watcher(messaging_apis[0].base, bob.token).connect(after=0)
    asked, reply_id = await streaming_reply(alice, socket, chat, llm)

    path = f"/conversations/{chat['id']}/messages/{asked['id']}"
    assert (await alice.request("DELETE", path)).status_code == 200
    # members see the partial reply go
    await socket.wait_for(
        lambda f: (
            f["type"] == "inbox.event"
            and f.get("kind") == "message.deleted"
            and f["message"]["id"] == reply_id
        ),
        60,
    )
    session = await conversation_session(alice, chat["id"])

    async def ended() -> bool:
        r = await alice.request("GET", f"/sessions/{session['id']}")
        return r.json()["state"]["status"] == "idle"

    await until(ended, within=60)
    history = await all_messages(bob, chat["id"])
    assert [(m["id"], m["deleted"]) for m in history] == [(asked["id"], True), (reply_id, True)]
    assert not [m for m in await alice.messages(session["id"]) if m["role"] == "assistant"]
    await socket.close()


async def test_editing_the_question_mid_reply_reruns_the_turn_on_the_new_text(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
    llm: LLMServerThread,
) -> None:
    alice, bob = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 2)
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await add_agent(alice, chat["id"], agent["id"])
    socket = await Watcher(messaging_apis[0].base, bob.token).connect(after=0)
    asked, old_reply = await streaming_reply(alice, socket, chat, llm)

    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["the ", "new ", "answer"]}])
    path = f"/conversations/{chat['id']}/messages/{asked['id']}"
    r = await alice.request("PATCH", path, json={"content": f"@helper {marker}"})
    assert r.status_code == 200, r.text

    def answered(f: dict[str, Any]) -> bool:
        return (
            f["type"] == "inbox.event"
            and f.get("kind") == "message.edited"
            and f["message"]["content"] == "the new answer"
        )

    new_reply = (await socket.wait_for(answered, 60))["message"]["id"]
    await socket.wait_for(
        lambda f: (
            f["type"] == "inbox.event"
            and f.get("kind") == "message.deleted"
            and f["message"]["id"] == old_reply
        ),
        60,
    )
    history = await all_messages(bob, chat["id"])
    live = [(m["id"], m["content"]) for m in history if not m["deleted"]]
    assert live == [(asked["id"], f"@helper {marker}"), (new_reply, "the new answer")]
    # the agent's session kept the rerun only (the rolled-back turn's messages are gone)
    session = await conversation_session(alice, chat["id"])
    said = [m["content"] for m in await alice.messages(session["id"])]  # newest first
    assert said[0] == "the new answer" and said[1].endswith(f"@helper {marker}")
    assert not [s for s in said if "old" in s]
    await socket.close()
