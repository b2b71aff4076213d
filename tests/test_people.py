"""People and identity through a real `chatee api` and worker: `/me`, password change, account
deletion, the user directory and profiles, members with names, conversation rename/delete and
session delete."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowExecutionStatus
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatee.bus import stream_key
from tests.messaging_support import sync_all
from tests.security_support import assert_problem, bearer, ping, ws_url
from tests.support import Api, Stack

PASSWORD = "correct horse"


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def register(http: httpx.AsyncClient, name: str, **extra: Any) -> Api:
    body = {"username": name, "password": PASSWORD, **extra}
    r = await http.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    return Api(http, r.json()["token"], r.json()["user_id"])


async def login(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"username": name, "password": password})


async def me(api: Api) -> dict[str, Any]:
    r = await api.request("GET", "/me")
    assert r.status_code == 200, r.text
    return r.json()


async def group(owner: Api, members: list[str], title: str = "team") -> dict[str, Any]:
    body = {"type": "group", "members": members, "title": title}
    r = await owner.request("POST", "/conversations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def members(api: Api, conversation_id: str) -> dict[str, dict[str, Any]]:
    r = await api.request("GET", f"/conversations/{conversation_id}/members")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()}


async def search(api: Api, q: str, **params: Any) -> list[dict[str, Any]]:
    r = await api.request("GET", "/users", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


# -- /me ------------------------------------------------------------------------------------------


async def test_me_reads_and_renames(http: httpx.AsyncClient) -> None:
    name = f"me-{tag()}"
    api = await register(http, name)
    mine = await me(api)
    assert mine["id"] == api.user_id and mine["username"] == name
    assert mine["display_name"] == name  # the default
    assert mine["created_at"].endswith("Z")

    r = await api.request("PATCH", "/me", json={"display_name": "  Alice   Liddell "})
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Alice Liddell"
    assert (await me(api))["display_name"] == "Alice Liddell"

    for bad in ("   ", "", "x" * 65):
        body = assert_problem(await api.request("PATCH", "/me", json={"display_name": bad}), 422)
        assert body["errors"][0]["loc"][-1] == "display_name"
    assert (await me(api))["display_name"] == "Alice Liddell"  # nothing changed
    assert_problem(await http.get("/api/v1/me"), 401)

    named = await register(http, f"named-{tag()}", display_name="Bob Builder")
    assert (await me(named))["display_name"] == "Bob Builder"


async def test_a_password_change_revokes_every_other_login(http: httpx.AsyncClient) -> None:
    name = f"pw-{tag()}"
    r = await http.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
    here = r.json()
    r = await login(http, name)
    elsewhere = r.json()
    api = Api(http, here["token"], here["user_id"])

    wrong = {"current_password": "not it at all", "new_password": "battery staple"}
    assert_problem(await api.request("POST", "/me/password", json=wrong), 403)
    assert (await login(http, name)).status_code == 200  # nothing changed
    short = {"current_password": PASSWORD, "new_password": "short"}
    assert_problem(await api.request("POST", "/me/password", json=short), 422)

    new = {"current_password": PASSWORD, "new_password": "battery staple"}
    r = await api.request("POST", "/me/password", json=new)
    assert r.status_code == 204, r.text

    # the other login: its access token and its refresh token are refused
    assert_problem(await http.get("/api/v1/me", headers=bearer(elsewhere["token"])), 401)
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": elsewhere["refresh_token"]})
    assert_problem(r, 401)
    # the login that made the change goes on
    assert (await me(api))["username"] == name
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": here["refresh_token"]})
    assert r.status_code == 200, r.text
    # the old password no longer logs in; the new one does
    assert_problem(await login(http, name), 401)
    assert (await login(http, name, "battery staple")).status_code == 200


async def test_deleting_an_account(http: httpx.AsyncClient, stack: Stack) -> None:
    """Its open sockets close with 4401, every credential is refused, its messages stay
    (attributed to "Deleted user"), it leaves its groups (the group is handed over), its agent
    goes, its username is free again."""
    name = f"gone-{tag()}"
    alice = await register(http, name, display_name="Alice")
    second = (await login(http, name)).json()
    r = await alice.request("POST", "/api-keys", json={"name": "bot", "scopes": ["conversations"]})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    bob_name = f"bob-{tag()}"
    bob = await register(http, bob_name)
    agent = await alice.create_agent(name=f"sage-{tag()}")
    private = (
        await alice.request(
            "POST", "/conversations", json={"type": "private", "members": [bob.user_id]}
        )
    ).json()
    team = await group(alice, [bob.user_id, agent["id"]])
    r = await alice.request(
        "POST", f"/conversations/{private['id']}/messages", json={"content": "hello bob"}
    )
    assert r.status_code == 201, r.text

    assert_problem(await alice.request("DELETE", "/me", json={"password": "wrong password"}), 403)
    assert (await me(alice))["display_name"] == "Alice"  # a wrong password changes nothing

    async with (
        connect(ws_url(stack, alice.token), open_timeout=10) as first_socket,
        connect(ws_url(stack, second["token"]), open_timeout=10) as second_socket,
        connect(ws_url(stack, key), open_timeout=10) as keyed_socket,
    ):
        sockets = (first_socket, second_socket, keyed_socket)
        for socket_ in sockets:
            assert (await ping(socket_))["type"] == "pong"
        r = await alice.request("DELETE", "/me", json={"password": PASSWORD})
        assert r.status_code == 204, r.text
        for socket_ in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # frames already on their way may come first
                    await asyncio.wait_for(socket_.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    for token in (alice.token, second["token"], key):
        assert_problem(await http.get("/api/v1/conversations", headers=bearer(token)), 401)
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(r, 401)
    assert_problem(await login(http, name), 401)

    # bob still has the message, from "Deleted user"
    r = await bob.request("GET", f"/conversations/{private['id']}/messages")
    (message,) = r.json()["items"]
    assert message["sender_id"] == alice.user_id and message["content"] == "hello bob"
    assert message["sender_name"] == "Deleted user"
    assert (await members(bob, private["id"]))[alice.user_id]["name"] == "Deleted user"
    # alice left the group, which is bob's now; her agent went with her
    in_team = await members(bob, team["id"])
    assert set(in_team) == {bob.user_id} and in_team[bob.user_id]["role"] == "owner"
    left = [  # and bob's devices learn it through /sync: the group's `member` entries
        i["member"]
        for i in (await bob.request("GET", "/sync", params={"after": 0})).json()["items"]
        if i["kind"] == "member" and i["conversation_id"] == team["id"]
    ]
    gone = [(x["change"], [m["id"] for m in x["members"]]) for x in left]
    assert gone == [("removed", [alice.user_id]), ("removed", [agent["id"]])]
    assert left[0]["new_owner"] == {  # the group was handed to bob in the same change
        "id": bob.user_id, "kind": "user", "name": bob_name, "role": "owner"
    }  # fmt: skip
    assert "new_owner" not in left[1]
    assert_problem(await bob.request("GET", f"/users/{alice.user_id}"), 404)
    assert await search(bob, name) == [] and await search(bob, "deleted") == []
    # the username is free again
    again = await register(http, name)
    assert again.user_id != alice.user_id


# -- the directory ---------------------------------------------------------------------------------


async def test_search_by_username_and_display_name_prefix(http: httpx.AsyncClient) -> None:
    t = tag()
    anna = await register(http, f"{t}anna", display_name="Zora Quill")
    annabel = await register(http, f"{t}annabel")
    bert = await register(http, f"{t}bert", display_name=f"{t.upper()}ANNIE Smith")
    dropped = await register(http, f"{t}annex")

    r = await dropped.request("DELETE", "/me", json={"password": PASSWORD})
    assert r.status_code == 204, r.text

    found = await search(anna, f"{t}ann")
    ids = {u["id"] for u in found}
    # usernames anna, annabel; bert's display name starts with it (in another case)
    assert ids == {anna.user_id, annabel.user_id, bert.user_id}
    assert {u["id"]: u for u in found}[anna.user_id] == {
        "id": anna.user_id,
        "username": f"{t}anna",
        "display_name": "Zora Quill",
    }
    assert {u["id"] for u in await search(anna, f"{t.upper()}ANNA")} == {
        anna.user_id,
        annabel.user_id,
    }
    assert {u["id"] for u in await search(bert, "zora qu")} >= {anna.user_id}
    assert len(await search(anna, t, limit=2)) == 2
    assert await search(anna, f"{t}zzz") == []
    # a name that contains the text but does not start with it is not a match
    assert all(u["id"] != anna.user_id for u in await search(anna, "quill"))
    # LIKE wildcards are plain text
    assert await search(anna, f"{t}%") == [] and await search(anna, f"{t}_nna") == []

    assert_problem(await anna.request("GET", "/users"), 422)
    assert_problem(await anna.request("GET", "/users", params={"q": t, "limit": 0}), 422)
    assert_problem(await http.get("/api/v1/users", params={"q": t}), 401)


async def test_public_profiles(user: Api, other_user: Api) -> None:
    r = await user.request("GET", f"/users/{other_user.user_id}")
    assert r.status_code == 200, r.text
    profile = r.json()
    assert profile.keys() == {"id", "username", "display_name"}
    assert profile["id"] == other_user.user_id
    for unknown in ("12345", "not-an-id", "9" * 30):
        assert_problem(await user.request("GET", f"/users/{unknown}"), 404)


# -- members, conversations, sessions -------------------------------------------------------------


async def test_members_carry_names_and_any_member_sees_the_agents(
    http: httpx.AsyncClient,
) -> None:
    alice = await register(http, f"alice-{tag()}", display_name="Alice A")
    bob = await register(http, f"bob-{tag()}", display_name="Bob B")
    agent = await alice.create_agent(name="Sage")
    team = await group(alice, [bob.user_id, agent["id"]])

    seen = await members(bob, team["id"])  # bob does not own the agent
    assert {m["id"]: (m["kind"], m["role"], m["name"]) for m in seen.values()} == {
        alice.user_id: ("user", "owner", "Alice A"),
        bob.user_id: ("user", "member", "Bob B"),
        agent["id"]: ("agent", "member", "Sage"),
    }
    r = await bob.request("PATCH", "/me", json={"display_name": "Robert"})
    assert r.status_code == 200
    assert (await members(alice, team["id"]))[bob.user_id]["name"] == "Robert"

    carol = await register(http, f"carol-{tag()}", display_name="Carol C")
    r = await alice.request(
        "POST", f"/conversations/{team['id']}/members", json={"members": [carol.user_id]}
    )
    assert r.status_code == 201, r.text
    assert r.json() == [{"id": carol.user_id, "kind": "user", "role": "member", "name": "Carol C"}]


async def test_rename_and_delete_rules(http: httpx.AsyncClient) -> None:
    owner, admin, member, stranger = [await register(http, f"p{i}-{tag()}") for i in range(4)]
    team = await group(owner, [admin.user_id, member.user_id], title="before")
    path = f"/conversations/{team['id']}"
    r = await owner.request("PATCH", f"{path}/members/{admin.user_id}", json={"role": "admin"})
    assert r.status_code == 200, r.text
    thread = (await owner.request("POST", f"{path}/threads", json={"title": "topic"})).json()

    body = assert_problem(await member.request("PATCH", path, json={"title": "mine"}), 403)
    assert "owner or an admin" in body["detail"]
    assert_problem(await stranger.request("PATCH", path, json={"title": "mine"}), 404)
    assert_problem(await admin.request("PATCH", path, json={"title": ""}), 422)
    r = await admin.request("PATCH", path, json={"title": "after"})
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "after"
    assert (await member.request("GET", path)).json()["title"] == "after"
    r = await admin.request("PATCH", f"/conversations/{thread['id']}", json={"title": "t2"})
    assert r.status_code == 200 and r.json()["title"] == "t2"

    private = (
        await member.request(
            "POST", "/conversations", json={"type": "private", "members": [stranger.user_id]}
        )
    ).json()
    assert_problem(
        await member.request("PATCH", f"/conversations/{private['id']}", json={"title": "x"}), 409
    )
    assert_problem(await member.request("DELETE", f"/conversations/{private['id']}"), 409)

    assert_problem(await admin.request("DELETE", path), 403)
    assert_problem(await member.request("DELETE", path), 403)
    assert_problem(await stranger.request("DELETE", path), 404)
    r = await owner.request("DELETE", path)
    assert r.status_code == 204, r.text
    for api in (owner, admin, member):
        assert_problem(await api.request("GET", path), 404)
        assert_problem(await api.request("GET", f"/conversations/{thread['id']}"), 404)
        listed = (await api.request("GET", "/conversations")).json()
        assert team["id"] not in {c["id"] for c in listed}
    r = await owner.request("POST", f"{path}/messages", json={"content": "anyone?"})
    assert_problem(r, 404)

    # each member's other devices learn both through /sync alone, in order
    seen = [(i["kind"], i.get("conversation")) for i in await sync_all(member)]
    conversation_changes = [(k, c) for k, c in seen if k.startswith("conversation.")]
    assert conversation_changes == [
        ("conversation.renamed", {"id": team["id"], "title": "after"}),
        ("conversation.renamed", {"id": thread["id"], "title": "t2"}),
        ("conversation.deleted", {"id": team["id"]}),
    ]


async def test_deleting_a_session_stops_its_workflow_and_its_messages_go(
    user: Api, other_user: Api, temporal_client: Client, redis: Redis
) -> None:
    session = await user.new_session()
    events = await user.stream_turn(session["id"], "hello there")
    assert events[-1]["event"] == "turn.completed"
    assert len(await user.messages(session["id"])) == 2
    handle = temporal_client.get_workflow_handle(session["workflow_id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await redis.exists(stream_key(session["id"])) == 1

    path = f"/sessions/{session['id']}"
    assert_problem(await other_user.request("DELETE", path), 404)
    r = await user.request("DELETE", path)
    assert r.status_code == 204, r.text

    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert await redis.exists(stream_key(session["id"])) == 0  # its events went too
    assert_problem(await user.request("GET", path), 404)
    assert_problem(await user.request("GET", f"{path}/messages"), 404)
    assert_problem(await user.request("DELETE", path), 404)
    listed = (await user.request("GET", "/sessions")).json()
    assert session["id"] not in {s["id"] for s in listed}
    r = await user.request("POST", "/chat/send", json={"session_id": session["id"], "content": "x"})
    assert_problem(r, 404)
