"""Conversations over HTTP against real `chatee api` processes: private chats, groups and
roles, threads, idempotent sends, agents in conversations, the Redis cache, and a
1,000-member group fanned out through the `MessageFanout` workflow."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.client import Client

from chatee.db import create_engine, session_factory
from chatee.devtools.llm_server import LLMServerThread
from chatee.ids import new_id
from chatee.models import ConversationAgent, InboxEntry, User
from chatee.security import issue_token
from tests.messaging_support import WsClient, all_messages, group, quick_users, send, sync_all
from tests.support import Api, Stack

Pair = tuple[Stack, Stack]


@pytest.fixture
async def people(
    clients: list[httpx.AsyncClient], sqlite_url: str, stack_env: dict[str, str]
) -> list[Api]:
    """Four users, alternating between the two API processes."""
    return await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 4)


def is_problem(r: httpx.Response, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"] == "application/problem+json"


async def test_a_private_chat_is_one_per_pair(people: list[Api]) -> None:
    alice, bob, carol, _ = people
    first = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
    )
    assert first.status_code == 201 and first.json()["type"] == "private"
    again = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
    )
    back = await bob.request(
        "POST", "/conversations", json={"type": "private", "members": [alice.user_id]}
    )
    assert again.status_code == back.status_code == 200
    assert first.json()["id"] == again.json()["id"] == back.json()["id"]
    for members in ([alice.user_id], [bob.user_id, carol.user_id], [str(new_id())], ["x"]):
        r = await alice.request(
            "POST", "/conversations", json={"type": "private", "members": members}
        )
        assert is_problem(r, 422), (members, r.text)


async def test_group_roles_decide_who_may_change_members(people: list[Api]) -> None:
    alice, bob, carol, dave = people
    chat = await group(alice, [bob])
    path = f"/conversations/{chat['id']}/members"
    r = await bob.request("POST", path, json={"members": [carol.user_id]})
    assert is_problem(r, 403)  # a plain member may not add
    r = await alice.request("PATCH", f"{path}/{bob.user_id}", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await bob.request("POST", path, json={"members": [carol.user_id, dave.user_id]})
    assert r.status_code == 201 and {m["id"] for m in r.json()} == {carol.user_id, dave.user_id}
    r = await bob.request("POST", path, json={"members": [dave.user_id], "role": "admin"})
    assert is_problem(r, 403)  # only the owner makes admins
    assert (await bob.request("DELETE", f"{path}/{alice.user_id}")).status_code == 403
    assert (await bob.request("DELETE", f"{path}/{dave.user_id}")).status_code == 204
    assert is_problem(await dave.request("GET", f"/conversations/{chat['id']}"), 404)
    assert (await carol.request("DELETE", f"{path}/{carol.user_id}")).status_code == 204  # leave

    assert (await alice.request("DELETE", f"{path}/{alice.user_id}")).status_code == 204
    roles = {m["id"]: m["role"] for m in (await bob.request("GET", path)).json()}
    assert roles == {bob.user_id: "owner"}  # the owner left: the admin took over
    r = await bob.request("GET", f"/conversations/{chat['id']}")
    assert r.json()["role"] == "owner" and r.json()["member_count"] == 1


async def test_a_conversation_you_are_not_in_is_a_404_everywhere(people: list[Api]) -> None:
    alice, bob, _, dave = people
    chat = await group(alice, [bob])
    cid = chat["id"]
    calls = [
        ("GET", f"/conversations/{cid}", None),
        ("GET", f"/conversations/{cid}/messages", None),
        ("GET", f"/conversations/{cid}/members", None),
        ("GET", f"/conversations/{cid}/threads", None),
        ("POST", f"/conversations/{cid}/messages", {"content": "hi", "client_msg_id": "x"}),
        ("POST", f"/conversations/{cid}/members", {"members": [dave.user_id]}),
        ("POST", f"/conversations/{cid}/threads", {"title": "t"}),
        ("POST", f"/conversations/{cid}/read", {"seq": 1}),
        ("GET", "/conversations/123/messages", None),
        ("GET", "/conversations/not-a-number", None),
    ]
    for method, path, body in calls:
        r = await dave.request(method, path, json=body)
        assert is_problem(r, 404), (method, path, r.status_code, r.text)
        assert r.json()["detail"] == "conversation not found"
    assert cid not in {c["id"] for c in (await dave.request("GET", "/conversations")).json()}


async def test_sends_are_stored_once_and_paged_newest_first(people: list[Api]) -> None:
    alice, bob, _, _ = people
    chat = await group(alice, [bob])
    first = await send(alice, chat["id"], "one", "c-1")
    again = await send(alice, chat["id"], "one", "c-1")
    assert first == again and first["seq"] == 1 and first["sender_id"] == alice.user_id
    others = await send(bob, chat["id"], "bob's own c-1", "c-1")
    assert others["seq"] == 2
    for i in range(3, 8):
        await send(alice, chat["id"], f"m{i}")
    path = f"/conversations/{chat['id']}/messages"
    page = (await bob.request("GET", path, params={"limit": 3})).json()
    assert [m["seq"] for m in page["items"]] == [7, 6, 5] and page["next_before_seq"] == 5
    page = (await bob.request("GET", path, params={"before_seq": 5, "limit": 10})).json()
    assert [m["seq"] for m in page["items"]] == [4, 3, 2, 1] and page["next_before_seq"] is None
    assert [m["content"] for m in await all_messages(bob, chat["id"])][:2] == [
        "one",
        "bob's own c-1",
    ]

    too_big = await alice.request(
        "POST", path, json={"content": "x" * 400_001, "client_msg_id": "b"}
    )
    assert is_problem(too_big, 413)
    empty = await alice.request("POST", path, json={"content": "", "client_msg_id": "e"})
    assert is_problem(empty, 422)
    # bob's inbox holds each message once, in order
    inbox = [i for i in await sync_all(bob) if i["conversation_id"] == chat["id"]]
    assert [i["message"]["seq"] for i in inbox] == list(range(1, 8))


async def test_threads_have_their_own_sequence_and_reach_the_group(people: list[Api]) -> None:
    alice, bob, carol, _ = people
    chat = await group(alice, [bob, carol])
    await send(alice, chat["id"], "in the group")
    r = await bob.request("POST", f"/conversations/{chat['id']}/threads", json={"title": "plans"})
    assert r.status_code == 201
    thread = r.json()
    assert thread["type"] == "thread" and thread["parent_id"] == chat["id"]
    posted = await send(carol, thread["id"], "in the thread")
    assert posted["seq"] == 1 and posted["conversation_id"] == thread["id"]
    assert (await send(alice, chat["id"], "group again"))["seq"] == 2
    listed = (await alice.request("GET", f"/conversations/{chat['id']}/threads")).json()
    assert [t["id"] for t in listed] == [thread["id"]]
    mine = {c["id"]: c for c in (await alice.request("GET", "/conversations")).json()}
    assert mine[thread["id"]]["unread"] == 1 and mine[chat["id"]]["unread"] == 0
    inbox = await sync_all(alice)
    assert [i["message"]["content"] for i in inbox][-3:] == [
        "in the group", "in the thread", "group again"
    ]  # fmt: skip
    private = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
    )
    r = await alice.request(
        "POST", f"/conversations/{private.json()['id']}/threads", json={"title": "x"}
    )
    assert is_problem(r, 409)


async def test_a_private_chat_with_an_agent_streams_and_posts_its_reply(
    messaging_apis: Pair, people: list[Api], llm: LLMServerThread
) -> None:
    alice = people[0]
    agent = await alice.create_agent(name="helper")
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["Sure", ", ", "done."]}])
    r = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [agent["id"]]}
    )
    chat = r.json()
    client = await WsClient(messaging_apis[1].base, alice.token).connect(after=0)
    try:
        await send(alice, chat["id"], f"please {marker}")
        await client.wait_inbox(2)
        mine, reply = (client.inbox[s]["message"] for s in sorted(client.inbox))
        assert mine["content"] == f"please {marker}"
        # the reply is a message from its first words on, streamed in place, then finished by
        # an edit that carries the final text (see tests/test_agent_members.py)
        assert (reply["sender_id"], reply["sender_type"]) == (agent["id"], "agent")
        assert reply["meta"]["streaming"] is True
        final = await client.wait_for(
            lambda f: (
                f["type"] == "inbox.event"
                and f.get("kind") == "message.edited"
                and f["message"]["id"] == reply["id"]
            )
        )
        assert final["message"]["content"] == "Sure, done."
        assert "streaming" not in final["message"]["meta"]
        events = [f for f in client.frames if f["type"] == "agent.event"]
        assert events[0]["event"] == "turn.started" and events[-1]["event"] == "turn.completed"
        assert {e["conversation_id"] for e in events} == {chat["id"]}
        assert {e["agent_id"] for e in events} == {agent["id"]}
        assert "".join(e["data"]["text"] for e in events if e["event"] == "message.delta") == (
            "Sure, done."
        )
        assert reply["meta"]["turn_id"] == events[-1]["data"]["turn_id"]

        await send(alice, chat["id"], "and again")
        await client.wait_for(
            lambda f: (
                f["type"] == "inbox.event"
                and f.get("kind") == "message.edited"
                and f["message"]["content"] == "echo: and again"
            )
        )
        sessions = (await alice.request("GET", "/sessions")).json()
        assert [s["title"] for s in sessions].count(f"private {chat['id']}") == 1
        assert [m["content"] for m in await all_messages(alice, chat["id"])] == [
            f"please {marker}", "Sure, done.", "and again", "echo: and again"
        ]  # fmt: skip
    finally:
        await client.close()


async def test_mentions_run_an_agent_in_a_group_and_in_its_threads(
    people: list[Api], llm: LLMServerThread, sqlite_url: str
) -> None:
    alice, bob, _, _ = people
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await alice.request(
        "POST", f"/conversations/{chat['id']}/members", json={"members": [agent["id"]]}
    )
    marker = uuid.uuid4().hex
    await send(bob, chat["id"], f"no mention here {marker}")
    await send(bob, chat["id"], f"@helper hello {marker}")
    replies = await _agent_messages(bob, chat["id"], 1)
    assert replies[0]["content"].startswith("echo: ")
    asked = [
        r["body"]["messages"][-1]["content"] for r in llm.llm.requests if marker in str(r["body"])
    ]
    assert len(asked) == 1 and asked[0].endswith(f": @helper hello {marker}")  # "<bob>: …"

    thread = (
        await bob.request("POST", f"/conversations/{chat['id']}/threads", json={"title": "t"})
    ).json()
    await send(bob, thread["id"], f"@HELPER in the thread {marker}")
    assert len(await _agent_messages(bob, thread["id"], 1)) == 1
    engine = create_engine(sqlite_url)
    async with session_factory(engine)() as db:
        links = (
            await db.execute(
                select(ConversationAgent).where(ConversationAgent.agent_id == int(agent["id"]))
            )
        ).scalars()
        assert {link.conversation_id for link in links} == {int(chat["id"]), int(thread["id"])}
    await engine.dispose()


async def _agent_messages(api: Api, conversation_id: str, count: int) -> list[dict]:
    for _ in range(300):
        found = [
            m
            for m in await all_messages(api, conversation_id)
            if m["sender_type"] == "agent" and not (m.get("meta") or {}).get("streaming")
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("the agent's reply never arrived")


async def test_cached_memberships_and_agents_follow_every_write(
    people: list[Api], llm: LLMServerThread
) -> None:
    alice, bob, carol, _ = people
    agent = await alice.create_agent(name="helper")
    chat = await group(alice, [bob])
    await alice.request(
        "POST", f"/conversations/{chat['id']}/members", json={"members": [agent["id"]]}
    )
    await send(bob, chat["id"], "warm the cache")  # membership and agent now cached
    await send(bob, chat["id"], "@helper warm")
    await _agent_messages(bob, chat["id"], 1)

    renamed = {**agent, "name": "sage"}
    for key in ("id", "created_at", "updated_at"):
        renamed.pop(key)
    assert (await alice.request("PUT", f"/agents/{agent['id']}", json=renamed)).status_code == 200
    marker = uuid.uuid4().hex
    await send(bob, chat["id"], f"@helper old name {marker}")
    await send(bob, chat["id"], f"@sage new name {marker}")
    replies = await _agent_messages(bob, chat["id"], 2)
    assert replies[-1]["content"].endswith(f"@sage new name {marker}")
    assert not [r for r in llm.llm.requests if f"old name {marker}" in json.dumps(r["body"])]

    path = f"/conversations/{chat['id']}/members"
    assert (await alice.request("DELETE", f"{path}/{bob.user_id}")).status_code == 204
    r = await bob.request("POST", f"/conversations/{chat['id']}/messages", json={"content": "x"})
    assert is_problem(r, 404)  # removed: refused at once, not after a cache TTL
    await alice.request("POST", path, json={"members": [carol.user_id]})
    assert (await send(carol, chat["id"], "just joined"))["sender_id"] == carol.user_id


async def test_a_thousand_member_group_fans_out_through_the_workflow(
    messaging_apis: Pair,
    people: list[Api],
    sqlite_url: str,
    stack_env: dict[str, str],
    temporal_client: Client,
) -> None:
    owner = people[0]
    engine = create_engine(sqlite_url)
    factory = session_factory(engine)
    ids = [new_id() for _ in range(999)]
    async with factory() as db:  # registering 999 users over HTTP would only time argon2
        db.add_all(User(id=i, username=f"crowd-{i}", password_hash="-") for i in ids)
        await db.commit()
    chat = await group(owner, [])
    r = await owner.request(
        "POST", f"/conversations/{chat['id']}/members", json={"members": [str(i) for i in ids]}
    )
    assert r.status_code == 201 and len(r.json()) == 999
    secret = stack_env["CHATEE_JWT_SECRET"]
    watchers = [
        await WsClient(messaging_apis[n % 2].base, issue_token(uid, secret, 600)).connect(after=0)
        for n, uid in enumerate((ids[0], ids[500], ids[-1]))
    ]
    try:
        content = f"to everyone {uuid.uuid4().hex}"
        message = await send(owner, chat["id"], content)
        handle = temporal_client.get_workflow_handle(f"fanout-{message['id']}")
        assert await handle.result() == 1000
        history = json.dumps((await handle.fetch_history()).to_json_dict())
        assert content not in history  # claim-check: ids in history, never bodies
        async with factory() as db:
            delivered = await db.scalar(
                select(func.count())
                .select_from(InboxEntry)
                .where(InboxEntry.message_id == int(message["id"]))
            )
        assert delivered == 1000
        for watcher in watchers:
            await watcher.wait_inbox(1)
            assert watcher.message_ids() == [message["id"]]
        crowd = Api(owner.client, issue_token(ids[123], secret, 600), str(ids[123]))
        inbox = await sync_all(crowd)  # the message, and the `member` entry of their joining
        assert [i["message"]["id"] for i in inbox if i["kind"] == "message"] == [message["id"]]
    finally:
        for watcher in watchers:
            await watcher.close()
        await engine.dispose()
