"""The WebSocket hub for real: `websockets` clients against two `chatee api` processes that
reach each other's sockets through Redis pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatee.devtools.llm_server import LLMServerThread
from tests.messaging_support import RawSocketClient, WsClient, group, quick_users, send, sync_all
from tests.support import Api, Stack

Pair = tuple[Stack, Stack]


@pytest.fixture
async def people(
    clients: list[httpx.AsyncClient], sqlite_url: str, stack_env: dict[str, str]
) -> list[Api]:
    """Four users, alternating between the two API processes."""
    return await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 4)


async def ws(stack: Stack, api: Api, **kwargs) -> WsClient:
    return await WsClient(stack.base, api.token).connect(**kwargs)


async def test_a_missing_or_bad_token_closes_with_4401(messaging_apis: Pair) -> None:
    url = messaging_apis[0].base.replace("http://", "ws://") + "/ws"
    for query in ("", "?token=nope", "?token=eyJhbGciOiJIUzI1NiJ9.e30.x"):
        async with connect(url + query) as socket_:
            with pytest.raises(ConnectionClosed) as closed:
                await socket_.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_malformed_frames_get_errors_and_the_socket_stays(
    messaging_apis: Pair, people: list[Api]
) -> None:
    alice = await ws(messaging_apis[0], people[0])
    stranger_group = await group(people[1], [people[2]])
    try:
        assert alice.ws is not None
        await alice.ws.send("not json")
        await alice.ws.send(json.dumps([1, 2]))
        await alice.ws.send(b"\xff\xfe")
        bad = [f for f in await _errors(alice, 3)]
        assert [f["code"] for f in bad] == ["bad-frame"] * 3
        unknown = await alice.request({"type": "dance"})
        assert unknown["type"] == "error" and unknown["code"] == "unknown-frame"
        missing = await alice.request({"type": "message.send", "conversation_id": "1"})
        assert missing["code"] == "bad-frame" and "content" in missing["detail"]
        wrong = await alice.request({"type": "sync", "after": "x"})
        assert wrong["code"] == "bad-frame"
        # a conversation you are not in is "not found", like one that does not exist
        for cid in (stranger_group["id"], "123", "abc"):
            denied = await alice.request(
                {"type": "message.send", "conversation_id": cid, "content": "hi"}
            )
            assert (denied["code"], denied["status"]) == ("not-found", 404)
        pong = await alice.request({"type": "ping"})
        assert pong["type"] == "pong"
    finally:
        await alice.close()


async def _errors(client: WsClient, count: int) -> list[dict]:
    def errors() -> list[dict]:
        return [f for f in client.frames if f["type"] == "error"]

    await client.wait_for(lambda f: f["type"] == "error" and len(errors()) >= count)
    return errors()


async def test_a_message_reaches_every_socket_of_every_member_on_both_processes(
    messaging_apis: Pair, people: list[Api]
) -> None:
    a, b = messaging_apis
    alice, bob, carol, _ = people
    chat = await group(alice, [bob, carol])
    sockets = {
        "alice": await ws(a, alice, after=0),
        "bob-a": await ws(a, bob, after=0),
        "bob-b": await ws(b, bob, after=0),
        "carol": await ws(b, carol, after=0),
    }
    try:
        body = {"type": "message.send", "conversation_id": chat["id"], "content": "hello all"}
        ack = await sockets["alice"].request({**body, "client_msg_id": "m-1"})
        assert ack["type"] == "message.ack"
        assert ack["client_msg_id"] == "m-1" and ack["seq"] == 1
        for client in sockets.values():
            await client.wait_inbox(1)
            (item,) = client.inbox.values()
            assert item["message"]["id"] == ack["id"]
            assert item["message"]["content"] == "hello all"
            assert item["conversation_id"] == chat["id"]
        assert sockets["bob-a"].inbox == sockets["bob-b"].inbox  # same user, same inbox_seq

        again = await sockets["alice"].request({**body, "client_msg_id": "m-1"})  # a resend
        assert (again["id"], again["seq"]) == (ack["id"], ack["seq"])
        await sockets["carol"].request({**body, "content": "second", "client_msg_id": "c-1"})
        for client in sockets.values():
            await client.wait_inbox(2)
        for client in sockets.values():
            assert [i["message"]["content"] for i in client.inbox.values()] == [
                "hello all",
                "second",
            ]
            assert not client.dupes and not client.gaps
    finally:
        for client in sockets.values():
            await client.close()


async def test_typing_presence_and_read_markers_cross_processes(
    messaging_apis: Pair, people: list[Api]
) -> None:
    a, b = messaging_apis
    alice, bob = people[0], people[1]
    r = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
    )
    chat = r.json()
    alice_ws = await ws(a, alice)
    try:
        bob_ws = await ws(b, bob)
        online = await alice_ws.wait_for(
            lambda f: f["type"] == "presence" and f["user_id"] == bob.user_id
        )
        assert online["status"] == "online"
        r = await alice.request("GET", "/presence", params={"user_ids": f"{bob.user_id},1"})
        assert [p["status"] for p in r.json()] == ["online", "offline"]

        await bob_ws.send({"type": "typing", "conversation_id": chat["id"]})
        typing = await alice_ws.wait_for(lambda f: f["type"] == "typing")
        assert typing == {"type": "typing", "conversation_id": chat["id"], "user_id": bob.user_id}

        for i in range(3):
            await send(bob, chat["id"], f"unread {i}")
        listed = {c["id"]: c for c in (await alice.request("GET", "/conversations")).json()}
        assert listed[chat["id"]]["unread"] == 3
        assert listed[chat["id"]]["last_seq"] == 3

        second = await ws(a, alice)  # another device of alice's
        await alice_ws.send({"type": "read", "conversation_id": chat["id"], "seq": 2})
        marker = await second.wait_for(lambda f: f["type"] == "read")
        assert marker["seq"] == 2 and marker["conversation_id"] == chat["id"]
        listed = {c["id"]: c for c in (await alice.request("GET", "/conversations")).json()}
        assert (listed[chat["id"]]["unread"], listed[chat["id"]]["last_read_seq"]) == (1, 2)
        r = await alice.request("POST", f"/conversations/{chat['id']}/read", json={"seq": 1})
        assert r.json()["last_read_seq"] == 2  # a marker never moves back
        await second.close()

        await bob_ws.close()
        offline = await alice_ws.wait_for(
            lambda f: f["type"] == "presence" and f["status"] == "offline"
        )
        assert offline["user_id"] == bob.user_id and offline["last_seen"]
        r = await alice.request("GET", "/presence", params={"user_ids": bob.user_id})
        assert r.json()[0]["status"] == "offline" and r.json()[0]["last_seen"]
    finally:
        await alice_ws.close()


async def test_pushes_cross_processes_again_after_redis_drops_every_subscriber(
    messaging_apis: Pair, people: list[Api], redis: Redis
) -> None:
    """What a Redis restart does to the pub/sub connections; redis-py's own PubSub never
    reads again after it, so the hub subscribes anew."""
    a, b = messaging_apis
    alice, bob = people[0], people[1]
    r = await alice.request(
        "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
    )
    chat = r.json()
    alice_ws, bob_ws = await ws(a, alice), await ws(b, bob)
    try:
        assert await redis.client_kill_filter(_type="pubsub") >= 2
        # typing is never stored: only a live push across the processes carries it
        async with asyncio.timeout(20):
            while True:
                await bob_ws.send({"type": "typing", "conversation_id": chat["id"]})
                with contextlib.suppress(TimeoutError):
                    await alice_ws.wait_for(lambda f: f["type"] == "typing", within=0.5)
                    break
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_connecting_after_a_cursor_replays_exactly_what_was_missed(
    messaging_apis: Pair, people: list[Api]
) -> None:
    a, b = messaging_apis
    alice, bob = people[0], people[1]
    chat = await group(alice, [bob])
    for i in range(6):
        await send(alice, chat["id"], f"m{i}")
    bob_ws = await ws(b, bob, after=2)
    try:
        await bob_ws.wait_inbox(4)
        await send(alice, chat["id"], "live")
        await bob_ws.wait_inbox(5)
        assert [i["inbox_seq"] for i in bob_ws.inbox.values()] == [3, 4, 5, 6, 7]
        assert [i["message"]["content"] for i in bob_ws.inbox.values()] == [
            "m2", "m3", "m4", "m5", "live"
        ]  # fmt: skip
        page = await bob_ws.request({"type": "sync", "after": 0, "limit": 4})
        assert [i["inbox_seq"] for i in page["items"]] == [1, 2, 3, 4]
        assert page["has_more"] and page["next_after"] == 4
    finally:
        await bob_ws.close()


async def test_a_slow_client_is_told_to_resync_and_never_stalls_the_others(
    messaging_apis: Pair, people: list[Api], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # an API process whose sockets queue at most 4 messages
    a = Stack(
        env={**messaging_apis[0].env, "CHATEE_MESSAGING__WS_QUEUE_SIZE": "4"},
        tmp=tmp_path_factory.mktemp("slow-client"),
    )
    a.start_api()
    alice, bob, carol = people[0], people[1], people[2]
    chat = await group(alice, [bob, carol])
    fast = await ws(a, carol, after=0)
    # bob's socket reads nothing until the others are done
    slow = await asyncio.to_thread(RawSocketClient, a.api_port, f"/ws?token={bob.token}&after=0")
    big = "x" * 200_000
    count = 40  # 8 MB: more than the kernel buffers between server and client hold
    try:
        for i in range(count):
            await send(alice, chat["id"], f"{i}:{big}", f"big-{i}")
        await fast.wait_inbox(count, within=60)  # the fast client got everything, live
        assert fast.resyncs == 0 and not fast.gaps and not fast.dupes

        got: dict[int, str] = {}
        resynced = False
        async with asyncio.timeout(60):
            while len(got) < count:
                frame = await asyncio.to_thread(slow.recv_json)
                if frame["type"] == "message.new":
                    got[frame["inbox_seq"]] = frame["message"]["id"]
                elif frame["type"] == "error" and frame["code"] == "resync":
                    resynced = True
                    assert frame["after"] == max(got, default=0)
                    slow.send_json({"type": "sync", "after": frame["after"]})
                elif frame["type"] == "sync":
                    for item in frame["items"]:
                        assert item["inbox_seq"] not in got
                        got[item["inbox_seq"]] = item["message"]["id"]
                    if frame["has_more"]:
                        slow.send_json({"type": "sync", "after": frame["next_after"]})
        assert resynced
        assert sorted(got) == list(range(1, count + 1))
        assert [got[s] for s in sorted(got)] == fast.message_ids()
    finally:
        slow.close()
        await fast.close()
        a.stop()


async def test_chat_send_streams_the_turn_as_agent_events(
    messaging_apis: Pair, people: list[Api], llm: LLMServerThread
) -> None:
    a, b = messaging_apis
    alice = people[0]
    session = await alice.new_session()
    marker = uuid.uuid4().hex
    llm.llm.script(marker, [{"chunks": ["one ", "two"]}])
    client = await ws(a, alice)
    follower = await ws(b, alice, session_id=session["id"])  # all events of the session
    try:
        ack = await client.request(
            {"type": "chat.send", "session_id": session["id"], "content": marker}
        )
        assert ack["type"] == "chat.ack" and ack["session_id"] == session["id"]
        done = await client.wait_for(
            lambda f: f["type"] == "agent.event" and f["event"] == "turn.completed"
        )
        assert done["data"]["content"] == "one two"
        assert done["data"]["turn_id"] == ack["turn_id"]
        events = [f for f in client.frames if f["type"] == "agent.event"]
        assert events[0]["event"] == "turn.started"
        deltas = [f["data"]["text"] for f in events if f["event"] == "message.delta"]
        assert "".join(deltas) == "one two"
        seen = await follower.wait_for(
            lambda f: f["type"] == "agent.event" and f["event"] == "turn.completed"
        )
        assert seen["id"] == done["id"]
        closed = await client.request({"type": "chat.send", "session_id": "1", "content": "x"})
        assert closed["code"] == "not-found"
    finally:
        await client.close()
        await follower.close()


async def test_sync_over_http_is_gap_free_across_conversations(
    messaging_apis: Pair, people: list[Api]
) -> None:
    alice, bob, carol = people[0], people[1], people[2]
    one = await group(alice, [bob])
    two = await group(carol, [bob])
    for i in range(3):
        await send(alice, one["id"], f"one-{i}")
        await send(carol, two["id"], f"two-{i}")
    items = await sync_all(bob)
    assert [i["inbox_seq"] for i in items] == list(range(1, 7))
    assert [i["message"]["content"] for i in items] == [
        "one-0", "two-0", "one-1", "two-1", "one-2", "two-2"
    ]  # fmt: skip
    tail = (await bob.request("GET", "/sync", params={"after": 4})).json()
    assert [i["inbox_seq"] for i in tail["items"]] == [5, 6]
    assert tail["next_after"] == 6 and tail["has_more"] is False
    empty = (await bob.request("GET", "/sync", params={"after": 6})).json()
    assert empty == {"items": [], "next_after": 6, "has_more": False}
