"""Edits, deletions and reactions, and one cursor for every change, against real `chatee api`
processes on SQLite and MariaDB: the rules a chat user expects (strangers 404, members without
the right 403), bad input refused with nothing changed, `sender_name` on every surface, a
device catching up on 200 mixed changes through `/sync` alone, and an API process killed in
the middle of a fan-out of edits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select, update

from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.messaging import ledger
from chatee.messaging.cache import Cache, name_key
from chatee.models import InboxEntry, MessageChange, User, utcnow
from chatee.security import issue_token
from tests.conftest import MESSAGING_ENV
from tests.messaging_support import WsClient, all_messages, group, send, sync_all
from tests.support import Api, Stack
from tests.test_message_store import conversation, draft, store  # noqa: F401, F811 - the fixture

REACTIONS_PER_WINDOW = 20
MAX_KINDS = 3


class Socket(WsClient):
    """A socket whose inbox entries (every kind) can be listed."""

    def sequence(self) -> list[tuple[int, str, str]]:
        return [entry_key(self.inbox[s]) for s in sorted(self.inbox)]


def entry_key(item: dict[str, Any]) -> tuple[int, str, str]:
    """(inbox_seq, kind, what it is about) of an inbox entry, pushed or synced."""
    about = item["message"]["id"] if item["kind"] == "message" else item["change_id"]
    return item["inbox_seq"], item["kind"], about


def is_problem(r: httpx.Response, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"] == "application/problem+json"


async def make_users(
    database_url: str, secret: str, client: httpx.AsyncClient, names: list[str]
) -> list[Api]:
    """Users made straight in the database (with display names) and a token each."""
    engine = create_engine(database_url)
    ids = [new_id() for _ in names]
    async with session_factory(engine)() as db:
        db.add_all(
            User(id=i, username=f"u-{i}", display_name=f"{name} {i % 1000}", password_hash="-")
            for i, name in zip(ids, names, strict=True)
        )
        await db.commit()
    await engine.dispose()
    return [Api(client, issue_token(uid, secret, 3600), str(uid)) for uid in ids]


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def db_api(
    request: pytest.FixtureRequest,
    stack: Stack,
    stack_env: dict[str, str],
    sqlite_url: str,
    mariadb_url: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, str]]:
    """An API process on each database, with small reaction limits. Its groups stay below the
    fan-out workflow threshold (the shared worker writes to SQLite only)."""
    url = sqlite_url if request.param == "sqlite" else mariadb_url
    if url is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    env = {
        **stack_env,
        **MESSAGING_ENV,
        "CHATEE_DATABASE_URL": url,
        "CHATEE_MESSAGING__REACTIONS_PER_WINDOW": str(REACTIONS_PER_WINDOW),
        "CHATEE_MESSAGING__MAX_REACTION_KINDS": str(MAX_KINDS),
    }
    api = Stack(env=env, tmp=tmp_path_factory.mktemp(f"changes-{request.param}"))
    api.start_api()
    yield api, url
    api.stop()


@pytest.fixture
async def people(db_api: tuple[Stack, str], stack_env: dict[str, str]) -> AsyncIterator[list[Api]]:
    """alice (owner), bob (admin), carol (member) in one group; dave is a stranger."""
    api, url = db_api
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        users = await make_users(
            url, stack_env["CHATEE_JWT_SECRET"], client, ["Alice", "Bob", "Carol", "Dave"]
        )
        yield users


async def _group(people: list[Api]) -> str:
    alice, bob, carol, _ = people
    chat = await group(alice, [bob, carol])
    r = await alice.request(
        "PATCH", f"/conversations/{chat['id']}/members/{bob.user_id}", json={"role": "admin"}
    )
    assert r.status_code == 200, r.text
    return chat["id"]


async def _state(api: Api, chat: str) -> list[dict[str, Any]]:
    return await all_messages(api, chat)


async def test_only_the_sender_edits_and_an_edit_keeps_the_place(people: list[Api]) -> None:
    alice, bob, carol, dave = people
    chat = await _group(people)
    first = await send(alice, chat, "helo")
    await send(bob, chat, "after")
    path = f"/conversations/{chat}/messages/{first['id']}"
    head = (await sync_all(carol))[-1]["inbox_seq"]
    before = await _state(carol, chat)

    assert is_problem(await dave.request("PATCH", path, json={"content": "x"}), 404)
    r = await bob.request("PATCH", path, json={"content": "x"})  # an admin, but not the sender
    assert is_problem(r, 403) and r.json()["detail"]
    assert is_problem(await alice.request("PATCH", path, json={"content": ""}), 422)
    assert is_problem(await alice.request("PATCH", path, json={"content": "x" * 400_001}), 413)
    r = await alice.request(
        "PATCH", f"/conversations/{chat}/messages/{new_id()}", json={"content": "x"}
    )
    assert is_problem(r, 404)
    assert await _state(carol, chat) == before  # nothing changed by any of those
    assert [i["inbox_seq"] for i in await sync_all(carol, head)] == []

    r = await alice.request("PATCH", path, json={"content": "hello"})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert edited["content"] == "hello" and edited["seq"] == first["seq"]
    assert edited["edited_at"].endswith("Z") and edited["sender_name"].startswith("Alice")
    history = await _state(carol, chat)
    assert [m["content"] for m in history] == ["hello", "after"]
    assert history[0]["edited_at"] == edited["edited_at"] and history[1]["edited_at"] is None
    (entry,) = await sync_all(carol, head)
    assert entry["kind"] == "message.edited" and entry["message"]["content"] == "hello"
    assert entry["message"]["id"] == first["id"] and entry["actor_id"] == alice.user_id


async def test_the_sender_or_an_admin_deletes_and_a_tombstone_stays(people: list[Api]) -> None:
    alice, bob, carol, dave = people
    chat = await _group(people)
    mine = await send(carol, chat, "carol's")
    alices = await send(alice, chat, "alice's")
    bobs = await send(bob, chat, "bob's")
    head = (await sync_all(alice))[-1]["inbox_seq"]
    msg = f"/conversations/{chat}/messages"

    assert is_problem(await dave.request("DELETE", f"{msg}/{mine['id']}"), 404)
    r = await carol.request("DELETE", f"{msg}/{alices['id']}")  # a member: only their own
    assert is_problem(r, 403) and r.json()["detail"]
    assert [m["deleted"] for m in await _state(alice, chat)] == [False, False, False]

    r = await carol.request("DELETE", f"{msg}/{mine['id']}")
    assert r.status_code == 200, r.text
    tomb = r.json()
    assert tomb["deleted"] is True and tomb["content"] == "" and tomb["seq"] == mine["seq"]
    r = await bob.request("DELETE", f"{msg}/{alices['id']}")  # an admin deletes the owner's
    assert r.status_code == 200 and r.json()["deleted"]
    r = await alice.request("DELETE", f"{msg}/{bobs['id']}")  # the owner deletes anyone's
    assert r.status_code == 200 and r.json()["deleted"]
    history = await _state(carol, chat)
    assert [(m["seq"], m["deleted"], m["content"]) for m in history] == [
        (1, True, ""), (2, True, ""), (3, True, "")
    ]  # fmt: skip
    entries = await sync_all(carol, head)
    assert [(e["kind"], e["message"]["id"]) for e in entries] == [
        ("message.deleted", mine["id"]),
        ("message.deleted", alices["id"]),
        ("message.deleted", bobs["id"]),
    ]
    assert all(e["message"]["content"] == "" for e in entries)

    # a tombstone cannot be edited or reacted to; deleting it again changes nothing
    r = await carol.request("PATCH", f"{msg}/{mine['id']}", json={"content": "back"})
    assert is_problem(r, 409)
    assert is_problem(
        await carol.request("PUT", f"{msg}/{mine['id']}/reactions/{quote('👍')}"), 409
    )
    assert (await carol.request("DELETE", f"{msg}/{mine['id']}")).status_code == 200
    assert len(await sync_all(carol, head)) == 3
    assert await _state(carol, chat) == history


async def test_reactions_are_per_person_and_emoji_and_me_is_per_viewer(
    people: list[Api],
) -> None:
    alice, bob, carol, dave = people
    chat = await _group(people)
    message = await send(alice, chat, "react to me")
    head = (await sync_all(alice))[-1]["inbox_seq"]
    base = f"/conversations/{chat}/messages/{message['id']}/reactions"

    def url(emoji: str) -> str:
        return f"{base}/{quote(emoji, safe='')}"

    assert is_problem(await dave.request("PUT", url("👍")), 404)
    r = await bob.request("PUT", url("👍"))
    assert r.status_code == 200, r.text
    assert r.json()["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    r = await carol.request("PUT", url("👍"))
    assert r.json()["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
    again = await carol.request("PUT", url("👍"))  # the same person and emoji: no change
    assert again.status_code == 200 and again.json()["reactions"] == r.json()["reactions"]
    r = await carol.request("PUT", url("👨‍👩‍👧‍👦"))
    assert r.status_code == 200
    (seen,) = [m for m in await _state(alice, chat) if m["id"] == message["id"]]
    assert seen["reactions"] == [
        {"emoji": "👍", "count": 2, "me": False},
        {"emoji": "👨‍👩‍👧‍👦", "count": 1, "me": False},
    ]
    r = await bob.request("DELETE", url("👍"))
    assert r.json()["reactions"] == [
        {"emoji": "👍", "count": 1, "me": False},
        {"emoji": "👨‍👩‍👧‍👦", "count": 1, "me": False},
    ]
    entries = await sync_all(alice, head)
    assert [(e["kind"], e["reaction"]) for e in entries] == [
        ("reaction", {"emoji": "👍", "added": True, "count": 1, "user_id": bob.user_id}),
        ("reaction", {"emoji": "👍", "added": True, "count": 2, "user_id": carol.user_id}),
        ("reaction", {"emoji": "👨‍👩‍👧‍👦", "added": True, "count": 1, "user_id": carol.user_id}),
        ("reaction", {"emoji": "👍", "added": False, "count": 1, "user_id": bob.user_id}),
    ]
    assert {e["message_id"] for e in entries} == {message["id"]}

    # bad emoji, and more kinds than a message takes: 4xx, nothing changed
    before = await _state(alice, chat)
    for bad in ("abc", ":+1:", "👍👍", "1", "\u200d", "👍" * 2560):
        assert is_problem(await bob.request("PUT", url(bad)), 422), bad
    await alice.request("PUT", url("🎉"))
    before = await _state(alice, chat)
    r = await alice.request("PUT", url("🚀"))  # a fourth kind (the limit is 3)
    assert is_problem(r, 409)
    assert await _state(alice, chat) == before
    assert len(await sync_all(alice, head)) == 5


async def test_a_reaction_flood_is_rate_limited_and_changes_nothing_more(
    people: list[Api],
) -> None:
    alice, bob, _, _ = people
    chat = await _group(people)
    message = await send(alice, chat, "flood me")
    head = (await sync_all(alice))[-1]["inbox_seq"]
    url = f"/conversations/{chat}/messages/{message['id']}/reactions/{quote('🔥')}"
    answers = [
        (await bob.request("PUT" if n % 2 == 0 else "DELETE", url)).status_code
        for n in range(REACTIONS_PER_WINDOW + 6)
    ]
    assert answers[:REACTIONS_PER_WINDOW] == [200] * REACTIONS_PER_WINDOW
    assert set(answers[REACTIONS_PER_WINDOW:]) == {429}
    r = await bob.request("PUT", url)
    assert is_problem(r, 429) and r.json()["detail"]
    (seen,) = [m for m in await _state(alice, chat) if m["id"] == message["id"]]
    assert seen["reactions"] == []  # the last allowed change took it back
    assert len(await sync_all(alice, head)) == REACTIONS_PER_WINDOW


async def test_sender_name_on_every_surface_and_for_a_deleted_user(
    people: list[Api], db_api: tuple[Stack, str], redis: Any
) -> None:
    alice, bob, carol, _ = people
    api, url = db_api
    chat = await _group(people)
    socket = await Socket(api.base, carol.token).connect()
    try:
        # answered once the socket is attached: without `after`, it hears what comes after that
        await socket.request({"type": "ping"})
        sent = await send(bob, chat, "named")
        assert sent["sender_name"].startswith("Bob")
        frame = await socket.wait_for(lambda f: f.get("type") == "message.new")
        assert frame["message"]["sender_name"] == sent["sender_name"]
        assert frame["message"]["created_at"] == sent["created_at"]
        assert sent["created_at"].endswith("Z") and len(sent["created_at"]) == 24
        (synced,) = [
            i for i in await sync_all(carol) if i.get("message", {}).get("id") == sent["id"]
        ]
        assert synced["message"]["sender_name"] == sent["sender_name"]
        (listed,) = [m for m in await _state(alice, chat) if m["id"] == sent["id"]]
        assert listed["sender_name"] == sent["sender_name"]

        # the account goes (as DELETE /me leaves it): its messages stay, under a deleted name
        engine = create_engine(url)
        async with session_factory(engine)() as db:
            await db.execute(
                update(User)
                .where(User.id == int(bob.user_id))
                .values(deleted_at=utcnow(), display_name="Deleted user")
            )
            await db.commit()
        await engine.dispose()
        await Cache(redis, 60).delete(name_key("user", int(bob.user_id)))
        (listed,) = [m for m in await _state(alice, chat) if m["id"] == sent["id"]]
        assert listed["sender_name"] == "Deleted user" and listed["content"] == "named"
    finally:
        await socket.close()


# -- one cursor: catching up on a burst of changes --------------------------------------------


async def test_a_device_catches_up_on_200_mixed_changes_through_sync_alone(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
) -> None:
    secret = stack_env["CHATEE_JWT_SECRET"]
    sleeper, live, alice, bob, newcomer = await make_users(
        sqlite_url, secret, clients[0], ["Sleeper", "Live", "Alice", "Bob", "Newcomer"]
    )
    bob = Api(clients[1], bob.token, bob.user_id)  # the other API process
    chats = [(await group(alice, [sleeper, live, bob], f"c{n}"))["id"] for n in range(3)]
    await send(alice, chats[0], "warm-up")
    start = (await sync_all(sleeper))[-1]["inbox_seq"]
    live_start = (await sync_all(live))[-1]["inbox_seq"]
    socket = await Socket(messaging_apis[1].base, live.token).connect(after=live_start)

    done: list[tuple[str, str]] = []  # (kind, conversation) of every change made
    messages: dict[str, list[dict[str, Any]]] = {c: [] for c in chats}
    reacted: set[tuple[str, str, str]] = set()

    async def act(n: int, chat: str) -> None:
        actor = (alice, bob)[n % 2]
        live_ones = [m for m in messages[chat] if not m.get("deleted")]
        step = n % 8
        if step in (0, 3, 6) or not live_ones:
            m = await send(actor, chat, f"m{n}")
            messages[chat].append({**m, "by": actor})
            done.append(("message", chat))
        elif step == 1:
            m = live_ones[-1]
            r = await m["by"].request(
                "PATCH", f"/conversations/{chat}/messages/{m['id']}", json={"content": f"e{n}"}
            )
            assert r.status_code == 200, r.text
            done.append(("message.edited", chat))
        elif step in (2, 5):  # react, or take a reaction back: a change either way
            m = live_ones[-1]
            mine = (m["id"], actor.user_id, ("👍", "🎉")[n % 2])
            method = "DELETE" if mine in reacted else "PUT"
            reacted.symmetric_difference_update({mine})
            r = await actor.request(
                method, f"/conversations/{chat}/messages/{m['id']}/reactions/{quote(mine[2])}"
            )
            assert r.status_code == 200, r.text
            done.append(("reaction", chat))
        elif step == 4:
            m = live_ones[0]
            r = await m["by"].request("DELETE", f"/conversations/{chat}/messages/{m['id']}")
            assert r.status_code == 200, r.text
            m["deleted"] = True
            done.append(("message.deleted", chat))
        else:  # step 7: someone joins, or leaves again
            members = f"/conversations/{chat}/members"
            r = await alice.request("GET", members)
            if any(x["id"] == newcomer.user_id for x in r.json()):
                r = await alice.request("DELETE", f"{members}/{newcomer.user_id}")
                assert r.status_code == 204, r.text
            else:
                r = await alice.request("POST", members, json={"members": [newcomer.user_id]})
                assert r.status_code == 201, r.text
            done.append(("member", chat))

    try:
        for n in range(200):  # one at a time: the order of the changes is the order expected
            await act(n, chats[n % 3])
        expected = [kind for kind, _ in done]
        caught_up = await sync_all(sleeper, start)
        assert [e["inbox_seq"] for e in caught_up] == list(range(start + 1, start + 201))
        assert [e["kind"] for e in caught_up] == expected
        assert [e["conversation_id"] for e in caught_up] == [c for _, c in done]
        for e in caught_up:  # every change names what it is about
            assert e["change_id"] if e["kind"] != "message" else e["message"]["sender_name"]
        # the live socket got the same changes, in the same order, once each
        await socket.wait_inbox(200)
        assert not socket.dupes and not socket.gaps
        live_entries = await sync_all(live, live_start)
        assert socket.sequence() == [entry_key(e) for e in live_entries]
        assert [k for _, k, _ in socket.sequence()] == expected
        # a second sync from the same cursor gives the same answer: nothing twice, nothing new
        assert [entry_key(e) for e in await sync_all(sleeper, start)] == [
            entry_key(e) for e in caught_up
        ]
    finally:
        await socket.close()


# -- durability: an API process killed during a fan-out of edits ---------------------------------


async def _until(check: Callable[[], Awaitable[bool]], within: float = 90) -> None:
    for _ in range(int(within / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("never happened")


EDITS_PER_EDITOR = 15


async def test_killing_an_api_process_during_a_fan_out_of_edits_loses_nothing(
    messaging_apis: tuple[Stack, Stack],
    stack_env: dict[str, str],
    sqlite_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    doomed = Stack(env={**stack_env, **MESSAGING_ENV}, tmp=tmp_path_factory.mktemp("doomed-edits"))
    survivor = messaging_apis[1]
    doomed_proc = doomed.start_api()
    async with (
        httpx.AsyncClient(base_url=doomed.base, timeout=30) as to_doomed,
        httpx.AsyncClient(base_url=survivor.base, timeout=30) as to_survivor,
    ):
        users = await make_users(
            sqlite_url, stack_env["CHATEE_JWT_SECRET"], to_survivor, [f"P{n}" for n in range(8)]
        )
        # a small group is recorded and delivered in one write, a large one (above the
        # threshold of 5) goes through the fan-out workflow
        small = (await group(users[1], users[:4]))["id"]
        large = (await group(users[0], users))["id"]
        targets = {
            users[0].user_id: (large, await send(users[0], large, "edit me")),
            users[2].user_id: (large, await send(users[2], large, "edit me too")),
            users[1].user_id: (small, await send(users[1], small, "small one")),
        }
        killed, flowing = asyncio.Event(), asyncio.Event()
        acked: dict[str, str] = {}  # message id -> last acknowledged text

        async def editor(api: Api) -> None:
            chat, message = targets[api.user_id]
            for i in range(EDITS_PER_EDITOR):
                text = f"{api.user_id} edit {i}"
                first = to_doomed if i % 2 == 0 and not killed.is_set() else to_survivor
                for client in (first, to_survivor, to_survivor):
                    with contextlib.suppress(httpx.TransportError):
                        r = await client.patch(
                            f"/api/v1/conversations/{chat}/messages/{message['id']}",
                            json={"content": text},
                            headers=api.headers,
                        )
                        assert r.status_code == 200, r.text
                        acked[message["id"]] = text
                        if i >= 4:
                            flowing.set()
                        break
                else:
                    raise AssertionError(f"edit {i} of {message['id']} was never accepted")

        editors = [asyncio.create_task(editor(users[n])) for n in (0, 2, 1)]
        await asyncio.wait_for(flowing.wait(), 60)
        doomed_proc.kill()  # SIGKILL, mid-flow
        killed.set()
        await asyncio.gather(*editors)

        users = [Api(to_survivor, u.token, u.user_id) for u in users]
        engine = create_engine(sqlite_url)
        factory = session_factory(engine)
        try:
            async with factory() as db:
                rows = (
                    await db.execute(
                        select(MessageChange.id, MessageChange.conversation_id).where(
                            MessageChange.conversation_id.in_([int(small), int(large)])
                        )
                    )
                ).all()
            changes = {cid: conv for cid, conv in rows}
            # every acknowledged edit is a change (an edit cut off by the kill may be one too)
            assert len(changes) >= 3 * EDITS_PER_EDITOR

            for n, user in enumerate(users):
                wanted = {str(c) for c, conv in changes.items() if conv == int(large) or n < 4}

                async def complete(user: Api = user, wanted: set[str] = wanted) -> bool:
                    got = {e["change_id"] for e in await sync_all(user) if e["kind"] != "message"}
                    return got >= wanted

                await _until(complete)  # the recovery loop finishes what the dead process left
                inbox = await sync_all(user)
                assert [e["inbox_seq"] for e in inbox] == list(range(1, len(inbox) + 1))
                edits = [e["change_id"] for e in inbox if e["kind"] == "message.edited"]
                assert sorted(edits) == sorted(wanted)  # each once, none missing

            async def all_done() -> bool:  # the fan-out marks a change done after delivering
                async with factory() as db:
                    pending = await db.scalar(
                        select(MessageChange.id).where(
                            MessageChange.id.in_(list(changes)),
                            MessageChange.fanout_status != "done",
                        )
                    )
                return pending is None

            await _until(all_done)
            async with factory() as db:
                entries = (
                    await db.execute(
                        select(InboxEntry.user_id, InboxEntry.change_id).where(
                            InboxEntry.change_id.in_(list(changes))
                        )
                    )
                ).all()
            assert len(entries) == len(set(entries))
            for chat, message in targets.values():
                history = {m["id"]: m for m in await all_messages(users[1], chat)}
                assert history[message["id"]]["edited_at"] is not None
                assert history[message["id"]]["content"].startswith(message["sender_id"])
            assert set(acked) == {m["id"] for _, m in targets.values()}
        finally:
            await engine.dispose()


# -- the store contract for changes (SQL on SQLite and MariaDB; HBase where there is one) -------


async def test_changes_reach_every_inbox_once_in_every_store(store) -> None:  # noqa: F811
    s, factory = store
    c = await conversation(factory)
    users = sorted(new_id() for _ in range(3))
    message, _ = await s.append(draft(c, users[0], "helo"))
    await s.deliver(message, users, finish=True)

    edit, items = await s.edit(message, "hello", users)  # recorded and delivered in one write
    assert edit is not None and edit.kind == "message.edited"
    assert [(i.user_id, i.inbox_seq, i.kind) for i in items] == [
        (u, 2, "message.edited") for u in users
    ]
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert edit.id not in await s.pending_changes(later, 10_000)

    reaction, none = await s.react(message, users[1], "👍", True, 20, None)  # fanned out later
    assert reaction is not None and none == [] and reaction.data["count"] == 1
    assert reaction.id in await s.pending_changes(later, 10_000)
    await s.deliver_change(reaction, users[:2])
    again = await s.deliver_change(reaction, users, finish=True)  # a retry overlapping the first
    assert [i.inbox_seq for i in again] == [3, 3, 3]
    assert reaction.id not in await s.pending_changes(later, 10_000)
    assert await s.react(message, users[1], "👍", True, 20, users) == (None, [])  # no change

    tomb, _ = await s.delete(message, users[2], users)
    assert tomb is not None and tomb.message is not None and tomb.message.deleted
    for user in users:
        inbox = await s.inbox(user, 0, 10)
        assert [(i.inbox_seq, i.kind) for i in inbox] == [
            (1, "message"), (2, "message.edited"), (3, "reaction"), (4, "message.deleted")
        ]  # fmt: skip
        assert inbox[1].change is not None and inbox[1].change.message is not None
        assert inbox[1].change.message.deleted  # the message as it is now
        assert inbox[2].to_json()["reaction"] == {
            "emoji": "👍", "added": True, "count": 1, "user_id": str(users[1])
        }  # fmt: skip
    (stored,) = await s.page(c, None, 10)
    assert stored.deleted and stored.content == "" and stored.seq == 1 and stored.edited_at
    with pytest.raises(ledger.MessageDeleted):
        await s.edit(message, "back", users)
    with pytest.raises(ledger.MessageDeleted):
        await s.react(message, users[0], "🎉", True, 20, users)
    assert len(await s.inbox(users[0], 0, 10)) == 4  # nothing more


async def test_the_websocket_frames_change_messages_under_the_same_rules(
    people: list[Api], db_api: tuple[Stack, str]
) -> None:
    alice, bob, carol, dave = people
    api, _ = db_api
    chat = await _group(people)
    message = await send(alice, chat, "over the socket")
    sockets = [await Socket(api.base, u.token).connect() for u in (alice, carol, dave)]
    mine, watcher, stranger = sockets
    about = {"conversation_id": chat, "message_id": message["id"]}
    try:
        r = await watcher.request({"type": "reaction.add", **about, "emoji": "🎉"})
        assert r["type"] == "message.changed"
        assert r["message"]["reactions"] == [{"emoji": "🎉", "count": 1, "me": True}]
        r = await watcher.request({"type": "message.edit", **about, "content": "mine now"})
        assert r["type"] == "error" and r["code"] == "not-sender" and r["status"] == 403
        r = await stranger.request({"type": "message.delete", **about})
        assert r["type"] == "error" and r["code"] == "not-found"
        r = await watcher.request({"type": "reaction.add", **about, "emoji": "nope"})
        assert r["type"] == "error" and r["code"] == "bad-emoji"
        r = await mine.request({"type": "message.edit", **about, "content": "edited"})
        assert r["type"] == "message.changed" and r["message"]["edited_at"]
        # both members' sockets got both changes, as `inbox.event`s, once each
        for socket in (mine, watcher):
            event = await socket.wait_for(lambda f: f.get("kind") == "message.edited")
            assert event["type"] == "inbox.event" and event["message"]["content"] == "edited"
            assert [k for _, k, _ in socket.sequence()] == ["reaction", "message.edited"]
        assert stranger.inbox == {}
    finally:
        for socket in sockets:
            await socket.close()
