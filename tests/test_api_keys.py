"""API keys through a real `chatee api`: shown once, hashed at rest, scoped, revocable."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from websockets.asyncio.client import connect

from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.models import ApiKey, RefreshToken, utcnow
from tests.security_support import (
    MCP_HEADERS,
    MCP_INIT,
    assert_problem,
    bearer,
    ping,
    ws_close_code,
    ws_url,
)
from tests.support import Api, Stack


async def create_key(user: Api, name: str, scopes: list[str]) -> dict:
    r = await user.request("POST", "/api-keys", json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return r.json()


async def stored_key(database_url: str, key_id: str) -> ApiKey:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as db:
            row = await db.get(ApiKey, int(key_id))
            assert row is not None
            return row
    finally:
        await engine.dispose()


async def test_a_key_is_shown_once_stored_hashed_and_limited_to_its_scopes(
    http: httpx.AsyncClient, user: Api, stack: Stack
) -> None:
    created = await create_key(user, "reporting", ["agents:read"])
    secret = created["key"]
    assert secret.startswith("chk_") and len(secret) > 40
    assert secret.startswith(created["prefix"]) and len(created["prefix"]) < len(secret) // 3
    assert created["scopes"] == ["agents:read"] and created["last_used_at"] is None

    # never returned again
    listed = await user.request("GET", "/api-keys")
    assert listed.status_code == 200 and secret not in listed.text
    assert [k["id"] for k in listed.json()] == [created["id"]]
    assert "key" not in listed.json()[0]

    # not stored in plaintext: the row holds a keyed hash, and no column holds the secret
    row = await stored_key(stack.env["CHATEE_DATABASE_URL"], created["id"])
    assert len(row.key_hash) == 64 and secret not in row.key_hash
    assert all(secret not in str(getattr(row, c.name)) for c in ApiKey.__table__.columns)

    key = bearer(secret)
    r = await http.get("/api/v1/agents", headers=key)
    assert r.status_code == 200 and r.json() == []
    agent = await user.create_agent(name="keyed")
    assert [a["id"] for a in (await http.get("/api/v1/agents", headers=key)).json()] == [
        agent["id"]
    ]
    # outside its scopes: 403 problem+json, and nothing written
    assert_problem(await http.post("/api/v1/agents", headers=key, json={"name": "x"}), 403)
    assert_problem(await http.delete(f"/api/v1/agents/{agent['id']}", headers=key), 403)
    assert_problem(await http.get("/api/v1/sessions", headers=key), 403)
    assert_problem(await http.get("/api/v1/api-keys", headers=key), 403)  # keys never manage keys
    assert len((await user.request("GET", "/agents")).json()) == 1
    # last use is recorded
    (listed,) = (await user.request("GET", "/api-keys")).json()
    assert listed["last_used_at"] is not None

    # revoked: 401 from then on; revoking again or someone else's key is a 404
    other = await Api.register(http)
    assert_problem(await other.request("DELETE", f"/api-keys/{created['id']}"), 404)
    assert (await user.request("DELETE", f"/api-keys/{created['id']}")).status_code == 204
    assert_problem(await http.get("/api/v1/agents", headers=key), 401)
    assert_problem(await user.request("DELETE", f"/api-keys/{created['id']}"), 404)
    assert (await user.request("GET", "/api-keys")).json() == []


async def test_scopes_cover_reads_writes_chat_and_the_websocket(
    http: httpx.AsyncClient, user: Api, stack: Stack
) -> None:
    agents_only = (await create_key(user, "agents", ["agents"]))["key"]
    chat = (await create_key(user, "bot", ["chat", "agents:read", "conversations"]))["key"]

    r = await http.post("/api/v1/agents", headers=bearer(agents_only), json={"name": "made"})
    assert r.status_code == 201, r.text
    agent_id = r.json()["id"]
    assert_problem(
        await http.post(
            "/api/v1/sessions", headers=bearer(agents_only), json={"agent_id": agent_id}
        ),
        403,
    )
    r = await http.post("/api/v1/sessions", headers=bearer(chat), json={"agent_id": agent_id})
    assert r.status_code == 201, r.text  # the key acts as its owner: the agent is theirs

    # /mcp (agents as tools) needs `chat`
    for secret, expected in ((chat, 200), (agents_only, 401)):
        headers = {**MCP_HEADERS, **bearer(secret)}
        assert (await http.post("/mcp", json=MCP_INIT, headers=headers)).status_code == expected

    # WebSocket: a key with `conversations`/`chat` connects; one without is closed with 4401
    async with connect(ws_url(stack, chat), open_timeout=10) as socket_:
        assert (await ping(socket_))["type"] == "pong"
    assert await ws_close_code(ws_url(stack, agents_only)) == 4401

    for bad in (["everything"], [], ["agents", "root"]):
        assert_problem(
            await user.request("POST", "/api-keys", json={"name": "x", "scopes": bad}), 422
        )
    assert_problem(await http.get("/api/v1/agents", headers=bearer("chk_made-up")), 401)


async def test_the_security_tables_round_trip_on_both_databases(database_url: str) -> None:
    """Migration 0005 on SQLite and MariaDB: the rows the API writes read back intact."""
    engine = create_engine(database_url)
    key_id, token_id, family = new_id(), new_id(), new_id()
    try:
        async with session_factory(engine)() as db:
            key = ApiKey(id=key_id, user_id=1, name="ключ 🔑", prefix="chk_abcdefgh",
                         key_hash="a" * 64, scopes=["chat", "agents:read"])  # fmt: skip
            db.add(key)
            db.add(RefreshToken(id=token_id, family_id=family, user_id=1,
                                token_hash=f"{token_id:064d}", expires_at=utcnow()))  # fmt: skip
            await db.commit()
        async with session_factory(engine)() as db:
            key = await db.get(ApiKey, key_id)
            assert (
                key is not None and key.name == "ключ 🔑" and key.scopes == ["chat", "agents:read"]
            )
            assert key.created_at.tzinfo is not None and key.revoked_at is None
            tokens = (
                await db.scalars(select(RefreshToken).where(RefreshToken.family_id == family))
            ).all()
            assert [t.id for t in tokens] == [token_id] and tokens[0].used_at is None
            await db.delete(key)
            await db.delete(tokens[0])
            await db.commit()
    finally:
        await engine.dispose()
