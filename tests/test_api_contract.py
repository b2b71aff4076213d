"""The HTTP contract for bad input and other people's data: problem+json 4xx, nothing written."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest

from tests.support import Api, Stack

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert "Traceback" not in r.text
    return body


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = (await http.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "redis", "temporal"}
    assert all(c["ok"] for c in ready["checks"].values())


async def test_register_login_and_wrong_password(http: httpx.AsyncClient) -> None:
    name = f"carol-{uuid.uuid4().hex[:8]}"
    user = await Api.register(http, name)
    r = await http.post("/api/v1/auth/login", json={"username": name, "password": "correct horse"})
    assert r.status_code == 200 and r.json()["user_id"] == user.user_id
    r2 = await http.get("/api/v1/agents", headers={"Authorization": f"Bearer {r.json()['token']}"})
    assert r2.status_code == 200
    r = await http.post("/api/v1/auth/login", json={"username": name, "password": "wrong horse"})
    assert_problem(r, 401)
    r = await http.post(
        "/api/v1/auth/login", json={"username": "nobody-x", "password": "whatever1"}
    )
    assert_problem(r, 401)


async def test_duplicate_username_is_409_whatever_the_case(http: httpx.AsyncClient) -> None:
    name = f"Dup-{uuid.uuid4().hex[:8]}"
    user = await Api.register(http, name)
    r = await http.post("/api/v1/auth/register", json={"username": name, "password": "another one"})
    assert_problem(r, 409)
    r = await http.post(
        "/api/v1/auth/register", json={"username": name.upper(), "password": "another one"}
    )
    assert_problem(r, 409)
    r = await http.post(
        "/api/v1/auth/login", json={"username": name.lower(), "password": "correct horse"}
    )
    assert r.status_code == 200 and r.json()["user_id"] == user.user_id


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long enough"},
        {"username": "has space", "password": "long enough"},
        {"username": "fine_name", "password": "short"},
        {"username": "fine_name"},
        {"username": 12345678, "password": "long enough"},
        {"username": "fine_name", "password": "long enough", "admin": True},
    ],
)
async def test_bad_registration_is_422(http: httpx.AsyncClient, body: dict) -> None:
    problem = assert_problem(await http.post("/api/v1/auth/register", json=body), 422)
    assert problem["errors"]


async def test_malformed_json_is_422(http: httpx.AsyncClient, user: Api) -> None:
    r = await http.post(
        "/api/v1/agents",
        content=b'{"name": ',
        headers={**user.headers, "content-type": "application/json"},
    )
    assert_problem(r, 422)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
async def test_routes_need_a_valid_token(http: httpx.AsyncClient, headers: dict) -> None:
    for method, path in [
        ("GET", "/api/v1/agents"),
        ("POST", "/api/v1/sessions"),
        ("POST", "/api/v1/chat/send"),
        ("GET", "/api/v1/sessions/1/messages"),
    ]:
        assert_problem(await http.request(method, path, headers=headers, json={}), 401)


async def test_expired_or_foreign_token_is_rejected(
    http: httpx.AsyncClient, user: Api, stack: Stack
) -> None:
    forged = jwt.encode({"sub": "1", "exp": int(time.time()) + 60}, "x" * 32, "HS256")
    r = await http.get("/api/v1/agents", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(r, 401)
    secret = stack.env["CHATEE_JWT_SECRET"]
    expired = jwt.encode({"sub": user.user_id, "exp": int(time.time()) - 5}, secret, "HS256")
    r = await http.get("/api/v1/agents", headers={"Authorization": f"Bearer {expired}"})
    assert_problem(r, 401)
    valid = jwt.encode({"sub": user.user_id, "exp": int(time.time()) + 60}, secret, "HS256")
    r = await http.get("/api/v1/agents", headers={"Authorization": f"Bearer {valid}"})
    assert r.status_code == 200


async def test_agent_crud(user: Api) -> None:
    agent = await user.create_agent(name="tutor", temperature=0.3, max_tokens=256)
    assert agent["provider"] == "openai" and agent["chain"] == ["AG_SELF_GEN"]
    assert (await user.request("GET", f"/agents/{agent['id']}")).json() == agent
    listed = (await user.request("GET", "/agents")).json()
    assert [a["id"] for a in listed] == [agent["id"]]

    r = await user.request(
        "PUT",
        f"/agents/{agent['id']}",
        json={"name": "tutor2", "model": "m2", "system_prompt": "x"},
    )
    assert r.status_code == 200
    updated = r.json()
    assert (updated["name"], updated["model"], updated["temperature"]) == ("tutor2", "m2", None)

    assert (await user.request("DELETE", f"/agents/{agent['id']}")).status_code == 204
    assert_problem(await user.request("GET", f"/agents/{agent['id']}"), 404)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "a", "temperature": 3},
        {"name": "a", "max_tokens": 0},
        {"name": "a", "provider": "acme"},
        {"name": "a", "chain": []},
        {"name": "a", "chain": ["AG_TELEPORT"]},
        {"name": "a", "double_texting": "shout"},
        {"name": "a", "unknown": 1},
    ],
)
async def test_bad_agent_is_422_and_not_created(user: Api, body: dict) -> None:
    assert_problem(await user.request("POST", "/agents", json=body), 422)
    assert (await user.request("GET", "/agents")).json() == []


async def test_other_users_resources_are_404(user: Api, other_user: Api) -> None:
    session = await user.new_session()
    agent_id, session_id = session["agent_id"], session["id"]
    attempts = [
        ("GET", f"/agents/{agent_id}", None),
        ("PUT", f"/agents/{agent_id}", {"name": "stolen"}),
        ("DELETE", f"/agents/{agent_id}", None),
        ("POST", "/sessions", {"agent_id": agent_id}),
        ("GET", f"/sessions/{session_id}", None),
        ("GET", f"/sessions/{session_id}/messages", None),
        ("GET", f"/sessions/{session_id}/events", None),
        ("POST", f"/sessions/{session_id}/close", None),
        ("POST", "/chat/send", {"session_id": session_id, "content": "hi"}),
        ("POST", "/chat/stream", {"session_id": session_id, "content": "hi"}),
    ]
    for method, path, body in attempts:
        assert_problem(await other_user.request(method, path, json=body), 404)
    assert (await user.request("GET", f"/agents/{agent_id}")).json()["name"] == "helper"
    assert await user.messages(session_id) == []
    assert (await user.request("GET", f"/sessions/{session_id}")).json()["status"] == "active"


@pytest.mark.parametrize(
    "bad_id", ["0", "999999999999", "abc", "1e5", "-1", "99999999999999999999"]
)
async def test_unknown_ids_are_404(user: Api, bad_id: str) -> None:
    assert_problem(await user.request("GET", f"/agents/{bad_id}"), 404)
    assert_problem(await user.request("GET", f"/sessions/{bad_id}"), 404)
    assert_problem(await user.request("POST", "/sessions", json={"agent_id": bad_id}), 404)
    r = await user.request("POST", "/chat/send", json={"session_id": bad_id, "content": "x"})
    assert_problem(r, 404)


async def test_oversized_content_is_413_and_not_stored(user: Api) -> None:
    session = await user.new_session()
    too_big = "é" * (16 * 1024 + 1)  # 32 KiB + 2 bytes of UTF-8
    r = await user.request(
        "POST", "/chat/send", json={"session_id": session["id"], "content": too_big}
    )
    assert_problem(r, 413)
    r = await user.request("POST", "/chat/send", json={"session_id": session["id"], "content": ""})
    assert_problem(r, 422)
    assert await user.messages(session["id"]) == []


async def test_oversized_body_is_413(user: Api) -> None:
    r = await user.request("POST", "/agents", content=b"x" * (2 * 1024 * 1024))
    assert_problem(r, 413)


async def test_bad_cursor_values_are_400(user: Api) -> None:
    session = await user.new_session()
    sid = session["id"]
    r = await user.request("GET", f"/sessions/{sid}/events", headers={"Last-Event-ID": "' OR 1=1"})
    assert_problem(r, 400)
    assert_problem(await user.request("GET", f"/sessions/{sid}/events", params={"after": "x"}), 400)
    assert_problem(
        await user.request("GET", f"/sessions/{sid}/messages", params={"before": "x"}), 400
    )
    r = await user.request("GET", f"/sessions/{sid}/messages", params={"limit": 0})
    assert_problem(r, 422)


async def test_message_history_pages_newest_first(user: Api) -> None:
    session = await user.new_session()
    for i in range(3):
        await user.stream_turn(session["id"], f"m{i}")
    seen: list[str] = []
    before = None
    while True:
        params = {"limit": 2, **({"before": before} if before else {})}
        page = (
            await user.request("GET", f"/sessions/{session['id']}/messages", params=params)
        ).json()
        seen += [m["content"] for m in page["items"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == ["echo: m2", "m2", "echo: m1", "m1", "echo: m0", "m0"]


async def test_openapi_documents_the_contract(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/agents",
        "/api/v1/agents/{agent_id}",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/messages",
        "/api/v1/sessions/{session_id}/events",
        "/api/v1/chat/send",
        "/api/v1/chat/stream",
        "/healthz",
        "/readyz",
    ]:
        assert path in spec["paths"], path
