"""Changes to a conversation itself — adding and removing members, leaving, roles, the title,
deleting it — against real `chatee api` processes on SQLite and MariaDB: each one and its entry
in every member's inbox are committed together or not at all. A change the database refuses to
record changes nothing anyone can see; changes made at once are told to everyone in the order
they happened, so replaying `member` entries from `/sync` gives the members
`GET /conversations/{id}/members` lists; a large group hears them through the fan-out
workflow."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chatee.db import create_engine
from tests.messaging_support import group, sync_all
from tests.support import Api, Stack
from tests.test_message_changes import _until, db_api, make_users  # noqa: F401, F811 - the fixture


async def members(api: Api, chat: str) -> dict[str, str]:
    """Who is in the conversation: member id -> role."""
    r = await api.request("GET", f"/conversations/{chat}/members")
    assert r.status_code == 200, r.text
    return {m["id"]: m["role"] for m in r.json()}


async def told(api: Api, chat: str, after: int = 0) -> list[dict[str, Any]]:
    """What the user's inbox holds about the conversation itself (not its messages)."""
    inbox = await sync_all(api, after)
    return [
        e
        for e in inbox
        if e["conversation_id"] == chat and (e["kind"] == "member" or "conversation" in e)
    ]


async def head(api: Api) -> int:
    """The user's last `inbox_seq`, checking there is no gap before it."""
    inbox = await sync_all(api)
    assert [e["inbox_seq"] for e in inbox] == list(range(1, len(inbox) + 1))
    return len(inbox)


@contextlib.asynccontextmanager
async def refusing_changes(database_url: str, chat: str) -> AsyncIterator[None]:
    """The database refuses to record any change to this conversation (a trigger on
    `message_changes`), as a full disk or a dropped connection would at that moment."""
    name, chat_id = f"refuse_{chat}", int(chat)
    if database_url.startswith("sqlite"):
        create = (
            f"CREATE TRIGGER {name} BEFORE INSERT ON message_changes "
            f"WHEN NEW.conversation_id = {chat_id} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    else:
        create = (
            f"CREATE TRIGGER {name} BEFORE INSERT ON message_changes FOR EACH ROW "
            f"IF NEW.conversation_id = {chat_id} THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF"
        )
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(create)
        yield
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        await engine.dispose()


@pytest.fixture
async def people(
    db_api: tuple[Stack, str],  # noqa: F811 - the fixture
    stack_env: dict[str, str],
) -> AsyncIterator[list[Api]]:
    api, url = db_api
    async with httpx.AsyncClient(base_url=api.base, timeout=60) as client:
        yield await make_users(
            url, stack_env["CHATEE_JWT_SECRET"], client, ["Alice", "Bob", "Carol", "Dave"]
        )


async def test_a_change_that_cannot_be_recorded_changes_nothing(
    db_api: tuple[Stack, str],  # noqa: F811 - the fixture
    people: list[Api],
) -> None:
    _, url = db_api
    alice, bob, carol, dave = people
    chat = (await group(alice, [bob, carol], "before"))["id"]
    path = f"/conversations/{chat}"
    before = await members(alice, chat)
    heads = {p.user_id: await head(p) for p in people}

    refused = [
        (alice, "POST", f"{path}/members", {"members": [dave.user_id]}),
        (alice, "PATCH", f"{path}/members/{bob.user_id}", {"role": "admin"}),
        (alice, "PATCH", f"{path}/members/{bob.user_id}", {"role": "owner"}),  # a hand-over
        (alice, "DELETE", f"{path}/members/{carol.user_id}", None),
        (carol, "DELETE", f"{path}/members/{carol.user_id}", None),  # leaving
        (alice, "DELETE", f"{path}/members/{alice.user_id}", None),  # the owner leaving
        (alice, "PATCH", path, {"title": "after"}),
        (alice, "DELETE", path, None),
    ]
    async with refusing_changes(url, chat):
        for api, method, where, body in refused:
            r = await api.request(method, where, json=body)
            assert r.status_code >= 500, (method, where, r.text)

    # nothing of any of them happened: not half of one
    assert await members(carol, chat) == before
    r = await dave.request("GET", path)
    assert r.status_code == 404, r.text
    r = await carol.request("GET", path)
    assert r.status_code == 200 and r.json()["title"] == "before", r.text
    assert {p.user_id: await head(p) for p in people} == heads  # and no inbox moved

    # once changes can be recorded again, each is in every inbox it belongs in, as it was
    r = await alice.request("POST", f"{path}/members", json={"members": [dave.user_id]})
    assert r.status_code == 201, r.text
    (added,) = r.json()
    r = await alice.request("PATCH", f"{path}/members/{bob.user_id}", json={"role": "admin"})
    assert r.status_code == 200, r.text
    bob_name = r.json()["name"]
    r = await carol.request("DELETE", f"{path}/members/{carol.user_id}")
    assert r.status_code == 204, r.text
    r = await alice.request("PATCH", path, json={"title": "after"})
    assert r.status_code == 200, r.text
    assert await members(alice, chat) == {alice.user_id: "owner", bob.user_id: "admin",
                                          dave.user_id: "member"}  # fmt: skip

    carol_name = (await sync_all(carol))[-1]["member"]["members"][0]["name"]
    expected = [
        {"change": "added", "members": [{**added, "role": "member"}]},
        {"change": "role", "members": [
            {"id": bob.user_id, "kind": "user", "name": bob_name, "role": "admin"}]},
        {"change": "removed", "members": [
            {"id": carol.user_id, "kind": "user", "name": carol_name, "role": None}]},
        {"id": chat, "title": "after"},
    ]  # fmt: skip
    for api, seen in ((alice, expected), (bob, expected), (dave, expected), (carol, expected[:3])):
        assert [e.get("member") or e.get("conversation") for e in await told(api, chat)] == seen
        await head(api)  # no gaps


async def test_member_changes_made_at_once_are_told_in_the_order_they_happened(
    db_api: tuple[Stack, str],  # noqa: F811 - the fixture
    stack_env: dict[str, str],
) -> None:
    api, url = db_api
    async with httpx.AsyncClient(base_url=api.base, timeout=60) as client:
        # at most 5 people: every change is delivered in its own write (below the threshold)
        alice, bob, *pool = await make_users(
            url, stack_env["CHATEE_JWT_SECRET"], client, ["Alice", "Bob", "P0", "P1", "P2"]
        )
        chat = (await group(alice, [bob]))["id"]
        path = f"/conversations/{chat}/members"
        r = await alice.request("PATCH", f"{path}/{bob.user_id}", json={"role": "admin"})
        assert r.status_code == 200, r.text
        start = {alice.user_id: await head(alice), bob.user_id: await head(bob)}
        rng = random.Random(15)

        async def change(n: int) -> int:
            """Someone joins, is removed, leaves, or is made an admin (all at once)."""
            actor, who = (alice, bob)[n % 2], rng.choice(pool)
            step = rng.randrange(4)
            if step == 0:
                r = await actor.request("POST", path, json={"members": [who.user_id]})
                return 1 if r.status_code == 201 and r.json() else 0
            if step == 3:
                r = await alice.request("PATCH", f"{path}/{who.user_id}", json={"role": "admin"})
            else:
                leaver = who if step == 2 else actor
                r = await leaver.request("DELETE", f"{path}/{who.user_id}")
            # 403: an admin removing an admin, 404: not in it (any more)
            assert r.status_code in (200, 204, 403, 404, 409), r.text
            return 1 if r.status_code in (200, 204) else 0

        made = 0
        for wave in range(5):
            made += sum(await asyncio.gather(*(change(wave * 12 + n) for n in range(12))))

        assert made > 5
        now = await members(alice, chat)
        for observer in (alice, bob):  # in it throughout: every change, in commit order
            entries = await told(observer, chat, start[observer.user_id])
            assert len(entries) == made
            replayed = {alice.user_id: "owner", bob.user_id: "admin"}
            for entry in entries:
                for x in entry["member"]["members"]:
                    if entry["member"]["change"] == "removed":
                        del replayed[x["id"]]
                    else:
                        replayed[x["id"]] = x["role"]
            assert replayed == now
            await head(observer)
        for person in pool:  # each heard of their own joining and leaving, the last one last
            about_them = [
                e["member"]["change"]
                for e in await told(person, chat)
                if any(x["id"] == person.user_id for x in e["member"]["members"])
            ]
            if person.user_id in now:
                assert about_them and about_them[-1] in ("added", "role")
            elif about_them:
                assert about_them[-1] == "removed"
            await head(person)


async def test_a_large_group_hears_of_member_changes_through_the_fan_out_workflow(
    messaging_apis: tuple[Stack, Stack],
    clients: list[httpx.AsyncClient],
    sqlite_url: str,
    stack_env: dict[str, str],
) -> None:
    # above the threshold of 5: each change is recorded `pending` and fanned out by the worker
    secret = stack_env["CHATEE_JWT_SECRET"]
    owner, *others, newcomer = await make_users(
        sqlite_url, secret, clients[0], [f"L{n}" for n in range(8)]
    )
    chat = (await group(owner, others))["id"]
    path = f"/conversations/{chat}"
    r = await owner.request("POST", f"{path}/members", json={"members": [newcomer.user_id]})
    assert r.status_code == 201, r.text
    r = await owner.request("PATCH", f"{path}/members/{others[0].user_id}", json={"role": "admin"})
    assert r.status_code == 200, r.text
    r = await newcomer.request("DELETE", f"{path}/members/{newcomer.user_id}")  # leaves
    assert r.status_code == 204, r.text
    r = await owner.request("PATCH", path, json={"title": "renamed"})
    assert r.status_code == 200, r.text

    # (sorted: the order of changes fanned out by separate workflows is another matter)
    everyone = [("added", "removed", "renamed", "role")] * 7
    heard_by = zip(
        [owner, *others, newcomer], [*everyone, ("added", "removed", "role")], strict=True
    )
    for person, kinds in heard_by:

        async def heard(person: Api = person, kinds: tuple[str, ...] = kinds) -> bool:
            entries = await told(person, chat)
            got = [e["member"]["change"] if e["kind"] == "member" else "renamed" for e in entries]
            return sorted(got) == list(kinds)

        await _until(heard, within=60)
        await head(person)
