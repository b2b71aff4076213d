"""Messaging under faults: an API process killed while messages flow, and a send whose
process died between storing the message and fanning it out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest

from chatee.db import create_engine, session_factory
from chatee.messaging.stores.sql import SqlMessageStore
from chatee.messaging.types import Draft
from chatee.models import ConversationMessage
from tests.conftest import MESSAGING_ENV
from tests.messaging_support import WsClient, all_messages, group, quick_users, sync_all
from tests.support import Api, Stack


async def _until(check: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    """Poll a condition over HTTP until it holds (there is nothing to wait on instead)."""
    for _ in range(int(within / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("never happened")


async def test_a_send_left_half_done_by_a_dead_process_is_finished(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
) -> None:
    alice, bob, carol = await quick_users(sqlite_url, stack_env["CHATEE_JWT_SECRET"], clients, 3)
    chat = await group(alice, [bob, carol])
    watcher = await WsClient(messaging_apis[1].base, bob.token).connect(after=0)
    # exactly what a process that died right after storing leaves behind: a ledger row
    # marked pending, no inbox entries, no push
    engine = create_engine(sqlite_url)
    store = SqlMessageStore(session_factory(engine))
    orphan, _ = await store.append(Draft(int(chat["id"]), int(alice.user_id), "orphan", "o-1"))
    try:
        await watcher.wait_inbox(1, within=60)  # the recovery loop of some API process did it
        assert watcher.message_ids() == [str(orphan.id)]
        for member in (alice, bob, carol):
            assert [i["message"]["id"] for i in await sync_all(member)] == [str(orphan.id)]
        async with session_factory(engine)() as db:
            row = await db.get(ConversationMessage, orphan.id)
            assert row is not None and row.fanout_status == "done"
        # the sender's resend of the same message is answered with it, delivered once
        r = await alice.request(
            "POST",
            f"/conversations/{chat['id']}/messages",
            json={"content": "orphan", "client_msg_id": "o-1"},
        )
        assert r.json()["id"] == str(orphan.id)
        assert len(await sync_all(bob)) == 1
    finally:
        await watcher.close()
        await engine.dispose()


SENDS_PER_SENDER = 20


async def test_killing_an_api_process_while_messages_flow_loses_nothing(
    messaging_apis: tuple[Stack, Stack],
    stack_env: dict[str, str],
    sqlite_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    doomed = Stack(
        # short presence leases, so its sockets' users go offline soon after it dies
        env={**stack_env, **MESSAGING_ENV, "CHATEE_MESSAGING__PRESENCE_TTL_SECONDS": "3"},
        tmp=tmp_path_factory.mktemp("doomed"),
    )
    survivor = messaging_apis[1]
    doomed_proc = doomed.start_api()
    async with (
        httpx.AsyncClient(base_url=doomed.base, timeout=30) as to_doomed,
        httpx.AsyncClient(base_url=survivor.base, timeout=30) as to_survivor,
    ):
        users = await quick_users(
            sqlite_url, stack_env["CHATEE_JWT_SECRET"], [to_doomed, to_survivor], 8
        )
        # a small group fans out inline, a larger one (above the threshold of 5) via Temporal
        small = await group(users[1], users[:4])
        large = await group(users[0], users)
        sockets: dict[str, WsClient] = {}
        for n, user in enumerate(users):
            base = doomed.base if n % 2 == 0 else survivor.base
            sockets[user.user_id] = await WsClient(base, user.token).connect(after=0)

        acked: dict[str, str] = {}  # client_msg_id -> message id
        flowing, killed = asyncio.Event(), asyncio.Event()

        async def sender(api: Api, conversation_id: str) -> None:
            for i in range(SENDS_PER_SENDER):
                key = f"{api.user_id}-{conversation_id}-{i}"
                body = {"content": f"{key} {uuid.uuid4().hex}", "client_msg_id": key}
                # half of the sends go to the process that is about to die
                first = to_doomed if i % 2 == 0 and not killed.is_set() else to_survivor
                for client in (first, to_survivor, to_survivor):
                    with contextlib.suppress(httpx.TransportError):
                        r = await client.post(
                            f"/api/v1/conversations/{conversation_id}/messages",
                            json=body,
                            headers=api.headers,
                        )
                        assert r.status_code == 201, r.text
                        acked[key] = r.json()["id"]
                        if len(acked) >= 12:
                            flowing.set()
                        break
                else:
                    raise AssertionError(f"{key} was never accepted")

        senders = [
            asyncio.create_task(sender(users[0], large["id"])),
            asyncio.create_task(sender(users[1], small["id"])),
            asyncio.create_task(sender(users[2], large["id"])),
        ]
        await asyncio.wait_for(flowing.wait(), 60)
        doomed_proc.kill()  # SIGKILL, mid-flow
        killed.set()
        await asyncio.gather(*senders)
        assert len(acked) == 3 * SENDS_PER_SENDER

        users = [Api(to_survivor, u.token, u.user_id) for u in users]

        async def offline() -> bool:  # nobody closed those sockets: their leases ran out
            r = await users[1].request("GET", "/presence", params={"user_ids": users[6].user_id})
            return r.json()[0]["status"] == "offline"

        await _until(offline)
        # sockets of the dead process reconnect to the survivor after the last seq they hold
        for n, user in enumerate(users):
            if n % 2 == 0:
                await sockets[user.user_id].reconnect(survivor.base)

        small_ids = {m["id"] for m in await all_messages(users[1], small["id"])}
        large_ids = {m["id"] for m in await all_messages(users[0], large["id"])}
        assert set(acked.values()) <= small_ids | large_ids
        assert len(small_ids) == SENDS_PER_SENDER and len(large_ids) == 2 * SENDS_PER_SENDER

        for n, user in enumerate(users):
            expected = large_ids | (small_ids if n < 4 else set())

            async def complete(user: Api = user, expected: set[str] = expected) -> bool:
                return {i["message"]["id"] for i in await sync_all(user)} >= expected

            await _until(complete)
            inbox = await sync_all(user)
            assert [i["inbox_seq"] for i in inbox] == list(range(1, len(inbox) + 1))
            assert sorted(i["message"]["id"] for i in inbox) == sorted(expected)
            socket_ = sockets[user.user_id]
            await socket_.wait_inbox(len(inbox))
            assert not socket_.dupes and not socket_.gaps
            assert socket_.message_ids() == [i["message"]["id"] for i in inbox]
        for socket_ in sockets.values():
            await socket_.close()
