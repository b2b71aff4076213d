"""People and identity through a real `chatee api` and worker: `/me`, password change, account
deletion, the user directory and profiles, members with names, conversation rename/delete and
session delete."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatee.bus import stream_key
from chatee.client import Client, Conversation, Member
from tests.messaging_support import sync_all
from tests.security_support import assert_problem, bearer, ping, ws_url
from tests.support import Api, Stack, access_token, new_session, stored_messages

PASSWORD = "correct horse"


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def register(http: httpx.AsyncClient, name: str, display_name: str | None = None) -> Client:
    """A new person, signed in through the SDK on the test's connection (nothing to close)."""
    client = Client(str(http.base_url), http=http)
    await client.register(name, PASSWORD, display_name)
    return client


async def login(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"username": name, "password": password})


async def group(owner: Client, members: list[str], title: str = "team") -> Conversation:
    return await owner.create_conversation("group", members, title)


async def members(client: Client, conversation_id: str) -> dict[str, Member]:
    return {m.id: m for m in await client.members(conversation_id)}


# -- /me ------------------------------------------------------------------------------------------


async def test_me_reads_and_renames(http: httpx.AsyncClient) -> None:
    name = f"me-{tag()}"
    ada = await register(http, name)
    mine = await ada.me()
    assert mine.id == ada.user_id and mine.username == name
    assert mine.display_name == name  # the default
    assert (await ada.request("GET", "/me"))["created_at"].endswith("Z")  # as sent: UTC, "Z"

    api = Api.of(ada)
    r = await api.request("PATCH", "/me", json={"display_name": "  Alice   Liddell "})
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Alice Liddell"
    assert (await ada.me()).display_name == "Alice Liddell"

    for bad in ("   ", "", "x" * 65):
        body = assert_problem(await api.request("PATCH", "/me", json={"display_name": bad}), 422)
        assert body["errors"][0]["loc"][-1] == "display_name"
    assert (await ada.me()).display_name == "Alice Liddell"  # nothing changed
    assert_problem(await http.get("/api/v1/me"), 401)

    named = await register(http, f"named-{tag()}", display_name="Bob Builder")
    assert (await named.me()).display_name == "Bob Builder"


async def test_a_password_change_revokes_every_other_login(http: httpx.AsyncClient) -> None:
    name = f"pw-{tag()}"
    here = await register(http, name)
    assert here.tokens is not None
    r = await login(http, name)
    elsewhere = r.json()
    # raw: the SDK would renew a refused access token, and which tokens are refused is the point
    api = Api.of(here)

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
    r = await api.request("GET", "/me")
    assert r.status_code == 200 and r.json()["username"] == name
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": here.tokens.refresh_token})
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
    alice_raw = Api.of(alice)
    r = await alice_raw.request(
        "POST", "/api-keys", json={"name": "bot", "scopes": ["conversations"]}
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    bob_name = f"bob-{tag()}"
    bob = await register(http, bob_name)
    agent = await alice.create_agent(f"sage-{tag()}")
    private = await alice.create_conversation("private", [bob.user_id])
    team = await group(alice, [bob.user_id, agent.id])
    r = await alice_raw.request(
        "POST", f"/conversations/{private.id}/messages", json={"content": "hello bob"}
    )
    assert r.status_code == 201, r.text

    wrong = {"password": "wrong password"}
    assert_problem(await alice_raw.request("DELETE", "/me", json=wrong), 403)
    assert (await alice.me()).display_name == "Alice"  # a wrong password changes nothing

    async with (
        connect(ws_url(stack, access_token(alice)), open_timeout=10) as first_socket,
        connect(ws_url(stack, second["token"]), open_timeout=10) as second_socket,
        connect(ws_url(stack, key), open_timeout=10) as keyed_socket,
    ):
        sockets = (first_socket, second_socket, keyed_socket)
        for socket_ in sockets:
            assert (await ping(socket_))["type"] == "pong"
        r = await alice_raw.request("DELETE", "/me", json={"password": PASSWORD})
        assert r.status_code == 204, r.text
        for socket_ in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # frames already on their way may come first
                    await asyncio.wait_for(socket_.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    for credential in (access_token(alice), second["token"], key):
        assert_problem(await http.get("/api/v1/conversations", headers=bearer(credential)), 401)
    r = await http.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(r, 401)
    assert_problem(await login(http, name), 401)

    # bob still has the message, from "Deleted user"
    (message,) = (await bob.history(private.id)).items
    assert message.sender_id == alice.user_id and message.content == "hello bob"
    assert message.sender_name == "Deleted user"
    assert (await members(bob, private.id))[alice.user_id].name == "Deleted user"
    # alice left the group, which is bob's now; her agent went with her
    in_team = await members(bob, team.id)
    assert set(in_team) == {bob.user_id} and in_team[bob.user_id].role == "owner"
    left = [  # and bob's devices learn it through /sync: the group's `member` entries
        i.model_extra["member"]
        for i in (await bob.sync(after=0)).items
        if i.kind == "member" and i.conversation_id == team.id
    ]
    gone = [(x["change"], [m["id"] for m in x["members"]]) for x in left]
    assert gone == [("removed", [alice.user_id]), ("removed", [agent.id])]
    assert left[0]["new_owner"] == {  # the group was handed to bob in the same change
        "id": bob.user_id, "kind": "user", "name": bob_name, "role": "owner"
    }  # fmt: skip
    assert "new_owner" not in left[1]
    assert_problem(await Api.of(bob).request("GET", f"/users/{alice.user_id}"), 404)
    assert await bob.find_users(name) == [] and await bob.find_users("deleted") == []
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

    r = await Api.of(dropped).request("DELETE", "/me", json={"password": PASSWORD})
    assert r.status_code == 204, r.text

    found = await anna.find_users(f"{t}ann")
    ids = {u.id for u in found}
    # usernames anna, annabel; bert's display name starts with it (in another case)
    assert ids == {anna.user_id, annabel.user_id, bert.user_id}
    assert {u.id: u for u in found}[anna.user_id].model_dump(exclude_unset=True) == {
        "id": anna.user_id,
        "username": f"{t}anna",
        "display_name": "Zora Quill",
    }  # exactly what the directory shows, nothing more
    assert {u.id for u in await anna.find_users(f"{t.upper()}ANNA")} == {
        anna.user_id,
        annabel.user_id,
    }
    assert {u.id for u in await bert.find_users("zora qu")} >= {anna.user_id}
    assert len(await anna.find_users(t, limit=2)) == 2
    assert await anna.find_users(f"{t}zzz") == []
    # a name that contains the text but does not start with it is not a match
    assert all(u.id != anna.user_id for u in await anna.find_users("quill"))
    # LIKE wildcards are plain text
    assert await anna.find_users(f"{t}%") == [] and await anna.find_users(f"{t}_nna") == []

    assert_problem(await Api.of(anna).request("GET", "/users"), 422)
    assert_problem(await Api.of(anna).request("GET", "/users", params={"q": t, "limit": 0}), 422)
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
    agent = await alice.create_agent("Sage")
    team = await group(alice, [bob.user_id, agent.id])

    seen = await members(bob, team.id)  # bob does not own the agent
    assert {m.id: (m.kind, m.role, m.name) for m in seen.values()} == {
        alice.user_id: ("user", "owner", "Alice A"),
        bob.user_id: ("user", "member", "Bob B"),
        agent.id: ("agent", "member", "Sage"),
    }
    r = await Api.of(bob).request("PATCH", "/me", json={"display_name": "Robert"})
    assert r.status_code == 200
    assert (await members(alice, team.id))[bob.user_id].name == "Robert"

    carol = await register(http, f"carol-{tag()}", display_name="Carol C")
    r = await Api.of(alice).request(
        "POST", f"/conversations/{team.id}/members", json={"members": [carol.user_id]}
    )
    assert r.status_code == 201, r.text
    assert r.json() == [{"id": carol.user_id, "kind": "user", "role": "member", "name": "Carol C"}]


async def test_rename_and_delete_rules(http: httpx.AsyncClient) -> None:
    people = [await register(http, f"p{i}-{tag()}") for i in range(4)]
    # the rules are status codes and problem types: the four act through the raw helper
    owner, admin, member, stranger = (Api.of(p) for p in people)
    team = await group(people[0], [admin.user_id, member.user_id], title="before")
    path = f"/conversations/{team.id}"
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
        assert team.id not in {c["id"] for c in listed}
    r = await owner.request("POST", f"{path}/messages", json={"content": "anyone?"})
    assert_problem(r, 404)

    # each member's other devices learn both through /sync alone, in order
    seen = [(i["kind"], i.get("conversation")) for i in await sync_all(member)]
    conversation_changes = [(k, c) for k, c in seen if k.startswith("conversation.")]
    assert conversation_changes == [
        ("conversation.renamed", {"id": team.id, "title": "after"}),
        ("conversation.renamed", {"id": thread["id"], "title": "t2"}),
        ("conversation.deleted", {"id": team.id}),
    ]


async def test_deleting_a_session_stops_its_workflow_and_its_messages_go(
    chatee: Client, other_chatee: Client, temporal_client: TemporalClient, redis: Redis
) -> None:
    session = await new_session(chatee)
    turn = await chatee.stream_turn(session.id, "hello there").run()
    assert turn.completed
    assert len(await stored_messages(chatee, session.id)) == 2
    handle = temporal_client.get_workflow_handle(session.workflow_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await redis.exists(stream_key(session.id)) == 1

    path = f"/sessions/{session.id}"
    api = Api.of(chatee)  # the route's status codes and problem types
    assert_problem(await Api.of(other_chatee).request("DELETE", path), 404)
    r = await api.request("DELETE", path)
    assert r.status_code == 204, r.text

    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
    assert await redis.exists(stream_key(session.id)) == 0  # its events went too
    assert_problem(await api.request("GET", path), 404)
    assert_problem(await api.request("GET", f"{path}/messages"), 404)
    assert_problem(await api.request("DELETE", path), 404)
    assert session.id not in {s.id for s in await chatee.sessions()}
    r = await api.request("POST", "/chat/send", json={"session_id": session.id, "content": "x"})
    assert_problem(r, 404)
