"""Chatee on a real Redis Cluster (`CHATEE_REDIS_CLUSTER=true`; README "Running at scale"):
3 primaries + 3 replicas started from `redis-server`. The event bus (scripts, the stream watch
per slot group), a failover under a follower, and the whole API flow — auth with logout
revocation, rate limits, an agent turn over SSE resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from redis.asyncio import RedisCluster

from chatee.bus import STREAM_GROUPS, EventBus, stream_key
from chatee.client import (
    ApiError,
    Client,
    ConversationMessage,
    InboxItem,
    Tokens,
    TurnCompleted,
    Unauthorized,
)
from chatee.config import Settings
from chatee.devtools.llm_server import LLMServerThread
from chatee.devtools.processes import Stack
from chatee.devtools.redis_cluster import RedisClusterProcesses
from chatee.redis import connect_redis
from tests.messaging_support import WsClient
from tests.support import (
    access_token,
    follow_until,
    new_session,
    signed_up,
    stored_messages,
    turn_events,
)

T = TypeVar("T")


@pytest.fixture
async def cluster(redis_cluster: RedisClusterProcesses) -> AsyncIterator[RedisCluster]:
    redis_cluster.wait_healthy()
    client = connect_redis(Settings(redis_url=redis_cluster.url, redis_cluster=True))
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


def sessions_in_distinct_groups(count: int) -> list[int]:
    found: dict[str, int] = {}
    sid = random.randrange(10**12, 10**13)
    while len(found) < count:
        sid += 1
        found.setdefault(stream_key(sid).split(":")[2], sid)
    return list(found.values())


async def test_publish_once_and_follow_streams_of_every_group(cluster: RedisCluster) -> None:
    bus = EventBus(cluster)
    sessions = sessions_in_distinct_groups(STREAM_GROUPS)
    # the dedupe marker and its stream share a slot: the publish script runs on a cluster
    sid = sessions[0]
    firsts = await asyncio.gather(*(bus.publish(sid, "e", {}, once_key="k") for _ in range(5)))
    assert len([f for f in firsts if f]) == 1

    async def follow(sid: int, want: int) -> list[int]:
        got = []
        async for event in bus.follow(sid, "0-0", block_ms=30_000):
            if event.event == "n":
                got.append(event.data["n"])
            if len(got) == want:
                return got
        return got

    followers = [asyncio.create_task(follow(s, 3)) for s in sessions]
    await asyncio.sleep(0.2)
    for n in range(3):  # one watch per slot group wakes each follower: no 30 s block waits
        await asyncio.gather(*(bus.publish(s, "n", {"n": n}) for s in sessions))
    results = await asyncio.wait_for(asyncio.gather(*followers), 10)
    assert results == [[0, 1, 2]] * len(sessions)
    await bus.close()


async def test_a_follower_gets_every_event_once_across_a_primary_failover(
    cluster: RedisCluster, redis_cluster: RedisClusterProcesses
) -> None:
    bus = EventBus(cluster)
    sid = random.randrange(10**12, 10**13)  # a stream of its own
    got: list[int] = []

    async def follow() -> None:
        async for event in bus.follow(sid, "0-0", block_ms=2_000):
            got.append(event.data["n"])
            if len(got) == 40:
                return

    follower = asyncio.create_task(follow())
    for n in range(20):
        await bus.publish(sid, "n", {"n": n}, once_key=str(n))
    node = cluster.get_node_from_key(stream_key(sid))
    # what the replica has survives (replication is asynchronous: see the README)
    await asyncio.to_thread(redis_cluster.wait_replicated, node.port)
    redis_cluster.kill(node.port)  # SIGKILL the primary that holds this stream
    n = 20
    while n < 40:  # resent, as activities do (same once_key), until the replica takes over
        try:
            await bus.publish(sid, "n", {"n": n}, once_key=str(n))
            n += 1
        except Exception:
            await asyncio.sleep(0.2)
    await asyncio.wait_for(follower, 30)
    # what the replica had and what was written after the failover: each there, once
    assert sorted(set(got)) == list(range(40)) and len(got) == len(set(got)), got
    await bus.close()


@pytest.fixture(scope="module")
def cluster_stack(
    isolated_stacks: Callable[[dict[str, str]], Stack], redis_cluster: RedisClusterProcesses
) -> Stack:
    redis_cluster.wait_healthy()
    stack = isolated_stacks(
        {
            "CHATEE_REDIS_URL": redis_cluster.url,
            "CHATEE_REDIS_CLUSTER": "true",
            "CHATEE_SECURITY__AUTH_REQUESTS_PER_WINDOW": "5",
        }
    )
    stack.start_worker()
    stack.start_api()
    return stack


async def all_messages(client: Client, conversation_id: str) -> list[ConversationMessage]:
    """The conversation's messages, oldest first."""
    items: list[ConversationMessage] = []
    before: int | None = None
    while True:
        page = await client.history(conversation_id, before_seq=before, limit=200)
        items += page.items
        if page.next_before_seq is None:
            return list(reversed(items))
        before = page.next_before_seq


async def sync_all(client: Client) -> list[InboxItem]:
    """Every entry of the caller's inbox, following `next_after` while `has_more`."""
    items: list[InboxItem] = []
    after = 0
    while True:
        page = await client.sync(after=after, limit=200)
        items += page.items
        after = page.next_after
        if not page.has_more:
            return items


async def test_auth_revocation_rate_limits_and_a_resumed_turn_on_a_cluster(
    cluster_stack: Stack, llm: LLMServerThread
) -> None:
    base = cluster_stack.base
    # auth: a logged-out token is refused (the deny-list check spans slots)
    async with await signed_up(base, timeout=60) as chatee:
        await chatee.agents()
        assert chatee.tokens is not None
        # the access token alone: no refresh token to renew it with after the 401
        access = Tokens(chatee.tokens.user_id, chatee.tokens.access_token)
        await chatee.logout()
    async with Client(base, tokens=access, timeout=60) as logged_out:
        with pytest.raises(Unauthorized):
            await logged_out.agents()

    # the per-IP auth budget (a Lua script on one key) limits and answers 429
    statuses = []
    proxied = {"X-Forwarded-For": "198.18.7.7"}  # a client address of its own
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=proxied) as http:
        nobody = Client(base, http=http)
        for _ in range(12):
            with pytest.raises(ApiError) as refused:
                await nobody.login("nobody", "wrong password")
            statuses.append(refused.value.status)
    assert 429 in statuses and statuses.index(429) >= 5

    # an agent turn streamed over SSE, then the session's events resumed from the middle
    async with await signed_up(base, timeout=60) as chatee:
        session = await new_session(chatee)
        llm.llm.script("cluster hello", ["Hello from a cluster."])
        events = await turn_events(chatee, session.id, "cluster hello")
        assert isinstance(events[-1], TurnCompleted)
        assert events[-1].content == "Hello from a cluster."
        middle = len(events) // 2
        resumed = await follow_until(chatee, session.id, "turn.completed", after=events[middle].id)
        assert [e.id for e in resumed] == [e.id for e in events[middle + 1 :]]


async def test_group_chat_across_two_apis_on_a_cluster(
    cluster_stack: Stack, llm: LLMServerThread, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # a second API process on the same cluster: pushes cross processes by sharded pub/sub
    other = Stack(env=cluster_stack.env, tmp=tmp_path_factory.mktemp("cluster-api-2"))
    other.start_api()
    try:
        async with (
            await signed_up(cluster_stack.base, timeout=60) as alice,
            await signed_up(other.base, timeout=60) as bob,
        ):
            agent = await alice.create_agent(
                "helper", system_prompt="You are helpful.", model="scripted"
            )
            chat = await alice.create_conversation("group", [bob.user_id], title="team")
            await alice.add_members(chat.id, [agent.id])
            alice_ws = await WsClient(cluster_stack.base, access_token(alice)).connect(after=0)
            bob_ws = await WsClient(other.base, access_token(bob)).connect(after=0)
            try:
                # presence (a user's keys share a slot: one transaction) and typing
                online = await alice_ws.wait_for(
                    lambda f: f["type"] == "presence" and f["user_id"] == bob.user_id
                )
                assert online["status"] == "online"
                await bob_ws.send({"type": "typing", "conversation_id": chat.id})
                typing = await alice_ws.wait_for(lambda f: f["type"] == "typing")
                assert typing["user_id"] == bob.user_id

                # messages both ways, over the socket and over REST, each once and in order
                acked = await alice_ws.request(
                    {
                        "type": "message.send",
                        "conversation_id": chat.id,
                        "content": "hi bob",
                        "client_msg_id": "c1",
                    }
                )
                assert acked["type"] == "message.ack"
                await bob.send_message(chat.id, "hi alice")
                marker = uuid.uuid4().hex
                llm.llm.script(marker, [f"agent reply {marker}"])
                await bob.send_message(chat.id, f"@helper {marker}")
                reply = f"agent reply {marker}"
                for _ in range(300):  # the agent answers into the conversation
                    if reply in [m.content for m in await all_messages(bob, chat.id)]:
                        break
                    await asyncio.sleep(0.2)
                for socket in (alice_ws, bob_ws):
                    await socket.wait_inbox(4)
                    assert socket.dupes == [] and socket.gaps == []
                synced = [i for i in await sync_all(bob) if i.kind == "message"]
                assert [i.message.content for i in synced][-4:] == [
                    "hi bob",
                    "hi alice",
                    f"@helper {marker}",
                    reply,
                ]

                # a read marker reaches the reader's other devices
                last = (await all_messages(alice, chat.id))[-1].seq
                await alice.mark_read(chat.id, last)
                listed = {c.id: c for c in await alice.conversations()}
                assert listed[chat.id].unread == 0
            finally:
                await alice_ws.close()
                await bob_ws.close()
    finally:
        other.stop()


async def until_answered(send: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """`send` again (with the same `client_msg_id`) until the API answers below 500."""
    for _ in range(300):
        try:
            return await send(*args, **kwargs)
        except httpx.TransportError:
            pass
        except ApiError as error:
            if error.status < 500:
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"{send.__name__}{args} never answered")


async def test_a_primary_killed_mid_traffic_loses_and_doubles_nothing(
    cluster_stack: Stack, redis_cluster: RedisClusterProcesses, llm: LLMServerThread
) -> None:
    """Sends and a turn while a primary is SIGKILLed: clients resend with the same
    `client_msg_id` until answered, as the contract asks; afterwards every message is there
    once, in order, the socket saw each once, and the turn answered once."""
    async with (
        await signed_up(cluster_stack.base, timeout=60) as alice,
        await signed_up(cluster_stack.base, timeout=60) as bob,
    ):
        chat = await alice.create_conversation("group", [bob.user_id], title="team")
        bob_ws = await WsClient(cluster_stack.base, access_token(bob)).connect(after=0)
        session = await new_session(alice)
        marker = uuid.uuid4().hex
        # a step retried across the failover generates again: the same answer each time
        llm.llm.script(marker, [{"text": f"answered {marker}", "delay_ms": 2000}] * 5)

        async def sends() -> None:
            for n in range(60):
                msg_id = f"m{n}-{marker}"
                await until_answered(alice.send_message, chat.id, f"m{n}", client_msg_id=msg_id)
                await asyncio.sleep(0.05)

        traffic = asyncio.create_task(sends())
        await until_answered(alice.send, session.id, marker, client_msg_id=marker)
        await asyncio.sleep(1)
        redis_cluster.kill(redis_cluster.failover_candidate())  # mid-traffic, mid-turn
        await asyncio.wait_for(traffic, 120)
        try:
            contents = [m.content for m in await all_messages(alice, chat.id)]
            assert contents == [f"m{n}" for n in range(60)]
            await bob_ws.wait_inbox(60, within=90)  # the reconcile fills what pub/sub lost
            assert bob_ws.dupes == [] and bob_ws.gaps == []
        finally:
            await bob_ws.close()

        async def replies() -> list[str]:
            stored = await stored_messages(alice, session.id)
            return [m.content for m in stored if m.role == "assistant"]

        for _ in range(300):
            if await replies():
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # a second answer would show up by now
        assert await replies() == [f"answered {marker}"]
