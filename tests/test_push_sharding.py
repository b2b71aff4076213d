"""Pushes scale with a process's own users (README "Running at scale"): users hash into push
channels (`chatee:push:<bucket>`), and each API process subscribes to the buckets of the users
it holds sockets for — subscribing as the first socket of a bucket arrives, unsubscribing as the
last one leaves. Four API processes, a socket each: every socket gets exactly its own inbox,
and a bucket's channel is heard only by the process that holds its user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis

from chatee.devtools.processes import Stack
from chatee.messaging.fanout import push_channel
from tests.messaging_support import WsClient, group, send
from tests.support import Api

APIS = 4
BUCKETS = 256


@pytest.fixture(scope="module")
def apis(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Stack]]:
    running = [Stack(stack_env, tmp_path_factory.mktemp(f"push-{n}")) for n in range(APIS)]
    for api in running:
        api.start_api()
    yield running
    for api in running:
        api.stop()


async def listeners(redis: Redis, channels: list[str]) -> list[int]:
    counts = dict(await redis.pubsub_numsub(*channels))
    return [counts[c] for c in channels]


async def settle(redis: Redis, channels: list[str], expected: list[int]) -> None:
    for _ in range(50):
        if await listeners(redis, channels) == expected:
            return
        await asyncio.sleep(0.1)
    assert await listeners(redis, channels) == expected


async def test_each_process_hears_only_its_users_buckets(apis: list[Stack], redis: Redis) -> None:
    clients = [httpx.AsyncClient(base_url=api.base, timeout=30) for api in apis]
    try:
        people: list[Api] = []
        while len(people) < APIS:  # one person per process, each in a bucket of their own
            person = await Api.register(clients[len(people)])
            mine = push_channel(int(person.user_id), BUCKETS)
            if mine not in {push_channel(int(p.user_id), BUCKETS) for p in people}:
                people.append(person)
        channels = [push_channel(int(p.user_id), BUCKETS) for p in people]
        before = await listeners(redis, channels)
        chat = await group(people[0], people[1:])
        sockets = [
            await WsClient(api.base, person.token).connect(after=0)
            for api, person in zip(apis, people, strict=True)
        ]
        try:
            # each bucket's channel gained exactly one listener: the process holding its user
            # (a socket's handshake ends before its process has subscribed)
            await settle(redis, channels, [n + 1 for n in before])
            for round_ in range(5):
                for i, person in enumerate(people):  # sent through another process
                    elsewhere = Api(clients[(i + 1) % APIS], person.token, person.user_id)
                    await send(elsewhere, chat["id"], f"{round_}-{i}")
            for socket in sockets:
                await socket.wait_inbox(5 * APIS)
                assert socket.dupes == [] and socket.gaps == []
                assert sorted(socket.inbox) == list(range(1, 5 * APIS + 1))
        finally:
            for socket in sockets:
                await socket.close()
        await settle(redis, channels, before)  # a bucket's last socket gone: unsubscribed
    finally:
        for client in clients:
            await client.aclose()
