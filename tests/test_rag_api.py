"""Knowledge bases, RAG and memory end to end: the real API and worker processes, Temporal
running the `IngestDocument` workflow, the scripted LLM server for embeddings and replies."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.db import create_engine, session_factory
from chatee.devtools.llm_server import LLMServerThread
from chatee.models import KbChunk, Message
from tests.support import Api

CORPUS = Path(__file__).parent / "data" / "rag"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def db(stack_env: dict[str, str]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The stack's own database, to check what the API cannot show (chunk rows)."""
    engine = create_engine(stack_env["CHATEE_DATABASE_URL"])
    yield session_factory(engine)
    await engine.dispose()


async def chunk_rows(db: async_sessionmaker[AsyncSession], doc_id: str) -> list[tuple[int, int]]:
    async with db() as s:
        rows = await s.execute(
            select(KbChunk.ordinal, KbChunk.document_version).where(
                KbChunk.document_id == int(doc_id)
            )
        )
        return sorted((o, v) for o, v in rows)


async def new_kb(user: Api, name: str = "handbook") -> dict[str, Any]:
    r = await user.request("POST", "/knowledge-bases", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


async def upload(
    user: Api, kb_id: str, name: str, data: bytes, doc_id: str | None = None
) -> dict[str, Any]:
    path = f"/knowledge-bases/{kb_id}/documents" + (f"/{doc_id}" if doc_id else "")
    r = await user.request("PUT" if doc_id else "POST", path, files={"file": (name, data)})
    assert r.status_code == 202, r.text
    return r.json()


async def settled(user: Api, kb_id: str, doc_id: str, within: float = 60) -> dict[str, Any]:
    """Poll the document until its ingestion ends (ready or failed)."""
    deadline = time.monotonic() + within
    while True:
        r = await user.request("GET", f"/knowledge-bases/{kb_id}/documents/{doc_id}")
        assert r.status_code == 200, r.text
        doc = r.json()
        if doc["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.2)


async def search(user: Api, kb_id: str, query: str, **extra: Any) -> list[dict[str, Any]]:
    r = await user.request(
        "POST", f"/knowledge-bases/{kb_id}/search", json={"query": query, **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_upload_search_reupload_delete(
    user: Api, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await new_kb(user)
    doc = await upload(user, kb["id"], "lighthouse.md", (CORPUS / "lighthouse.md").read_bytes())
    assert doc["status"] == "pending" and doc["media_type"] == "text/markdown"
    doc = await settled(user, kb["id"], doc["id"])
    assert doc["status"] == "ready", doc
    total = doc["progress"]["chunks_total"]
    assert total > 0 and doc["progress"]["chunks_embedded"] == total

    hits = await search(user, kb["id"], "Where does the keeper store the paraffin?")
    assert "oil house" in hits[0]["text"] and hits[0]["document_name"] == "lighthouse.md"
    source = (CORPUS / "lighthouse.md").read_text()
    assert source[hits[0]["start"] : hits[0]["end"]] == hits[0]["text"]  # offsets into the file

    # re-upload: the new version replaces every chunk of the old one
    marker = uuid.uuid4().hex[:12]
    new_text = f"# Grey Point, rebuilt\n\nThe tower now has an LED lamp, code {marker}.\n"
    doc2 = await upload(user, kb["id"], "lighthouse.md", new_text.encode(), doc["id"])
    assert doc2["version"] == 2
    doc2 = await settled(user, kb["id"], doc["id"])
    assert doc2["status"] == "ready", doc2
    assert [h["text"] for h in await search(user, kb["id"], f"LED lamp {marker}")][0].endswith(
        f"code {marker}."
    )
    assert not [h for h in await search(user, kb["id"], "paraffin oil house") if h["score"] > 0]
    rows = await chunk_rows(db, doc["id"])
    assert rows == [(i, 2) for i in range(doc2["progress"]["chunks_total"])]

    listed = (await user.request("GET", f"/knowledge-bases/{kb['id']}/documents")).json()
    assert [d["id"] for d in listed["items"]] == [doc["id"]]
    assert (await user.request("GET", f"/knowledge-bases/{kb['id']}")).json()["documents"] == 1

    r = await user.request("DELETE", f"/knowledge-bases/{kb['id']}/documents/{doc['id']}")
    assert r.status_code == 204
    assert await chunk_rows(db, doc["id"]) == []
    assert await search(user, kb["id"], f"LED lamp {marker}") == []
    r = await user.request("GET", f"/knowledge-bases/{kb['id']}/documents/{doc['id']}")
    assert r.status_code == 404


async def test_a_failed_document_is_retried_without_duplicates(
    user: Api, llm: LLMServerThread, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await new_kb(user)
    broken = await upload(user, kb["id"], "broken.pdf", b"%PDF-1.4\nnot a pdf at all")
    broken = await settled(user, kb["id"], broken["id"])
    assert broken["status"] == "failed" and "cannot be read" in broken["error"]
    assert await chunk_rows(db, broken["id"]) == []

    # the embeddings provider refuses the first request for this document
    marker = uuid.uuid4().hex
    llm.llm.fail_embeddings(marker, times=1, status=400)
    text = "\n\n".join(f"Paragraph {i} about {marker} and the tide tables." for i in range(40))
    doc = await upload(user, kb["id"], "tides.txt", text.encode())
    doc = await settled(user, kb["id"], doc["id"])
    assert doc["status"] == "failed" and "rejected" in doc["error"], doc
    assert await chunk_rows(db, doc["id"]) == []

    r = await user.request("POST", f"/knowledge-bases/{kb['id']}/documents/{doc['id']}/retry")
    assert r.status_code == 202 and r.json()["status"] == "pending"
    doc = await settled(user, kb["id"], doc["id"])
    assert doc["status"] == "ready" and doc["error"] is None
    total = doc["progress"]["chunks_total"]
    assert total > 1 and doc["progress"]["chunks_embedded"] == total
    assert await chunk_rows(db, doc["id"]) == [(i, 1) for i in range(total)]
    assert marker in (await search(user, kb["id"], f"{marker} tide"))[0]["text"]

    # a provider hiccup (500) is retried by Temporal: the document gets ready by itself, and
    # the batch that failed is embedded once
    hiccup = uuid.uuid4().hex
    llm.llm.fail_embeddings(hiccup, times=1, status=500)
    text = "\n\n".join(f"Paragraph {i} about {hiccup} and the harbour." for i in range(40))
    flaky = await upload(user, kb["id"], "harbour.txt", text.encode())
    flaky = await settled(user, kb["id"], flaky["id"])
    assert flaky["status"] == "ready", flaky
    assert llm.llm.embedding_failure([hiccup]) is None  # the armed failure was used
    total = flaky["progress"]["chunks_total"]
    assert flaky["progress"]["chunks_embedded"] == total
    assert await chunk_rows(db, flaky["id"]) == [(i, 1) for i in range(total)]

    # only a failed document can be retried
    r = await user.request("POST", f"/knowledge-bases/{kb['id']}/documents/{doc['id']}/retry")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM


async def test_bad_uploads_are_problems(user: Api) -> None:
    kb = await new_kb(user)
    path = f"/knowledge-bases/{kb['id']}/documents"
    r = await user.request("POST", path, files={"file": ("photo.png", b"\x89PNG", "image/png")})
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    r = await user.request("POST", path, files={"file": ("empty.txt", b"")})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = await user.request("POST", path, json={"file": "not multipart"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert (await user.request("GET", path)).json() == {"items": []}


async def test_documents_may_be_larger_than_other_requests(user: Api) -> None:
    """Uploads have their own limit (limits.max_upload_bytes, 10 MiB) above the 1 MiB default."""
    kb = await new_kb(user)
    big = ("The harbour light turns every night. " * 32_000).encode()  # ~1.2 MiB
    doc = await upload(user, kb["id"], "harbour.txt", big)
    assert doc["name"] == "harbour.txt"
    r = await user.request("DELETE", f"/knowledge-bases/{kb['id']}/documents/{doc['id']}")
    assert r.status_code == 204
    too_big = b"x" * (10 * 1024 * 1024 + 1)
    path = f"/knowledge-bases/{kb['id']}/documents"
    r = await user.request("POST", path, files={"file": ("huge.txt", too_big)})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    r = await user.request("POST", "/agents", json={"name": "a", "system_prompt": "x" * len(big)})
    assert r.status_code == 413  # everything else keeps the request limit


async def test_agent_turn_cites_its_knowledge_base(
    user: Api, llm: LLMServerThread, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await new_kb(user, "bees")
    doc = await upload(user, kb["id"], "beekeeping.html", (CORPUS / "beekeeping.html").read_bytes())
    assert (await settled(user, kb["id"], doc["id"]))["status"] == "ready"
    agent = await user.create_agent(chain=["AG_RAG", "AG_SELF_GEN"])
    r = await user.request(
        "PUT", f"/agents/{agent['id']}/knowledge-bases", json={"knowledge_base_ids": [kb["id"]]}
    )
    assert r.status_code == 200 and r.json()["knowledge_base_ids"] == [kb["id"]]
    got = await user.request("GET", f"/agents/{agent['id']}/knowledge-bases")
    assert got.json()["knowledge_base_ids"] == [kb["id"]]
    session = await user.create_session(agent["id"])

    marker = uuid.uuid4().hex
    events = await user.stream_turn(session["id"], f"When should I treat varroa mites? {marker}")
    rag = next(e for e in events if e["event"] == "step.completed")
    assert rag["data"]["action"] == "AG_RAG"
    first = rag["data"]["citations"][0]
    assert first["document_id"] == doc["id"] and first["document_name"] == "beekeeping.html"
    assert first["chunk_id"] and first["end"] > first["start"] >= 0 and first["score"] > 0
    assert events[-1]["event"] == "turn.completed"

    # the model was given the passage
    sent = next(r["body"]["messages"] for r in llm.llm.requests if marker in json.dumps(r["body"]))
    note = next(m["content"] for m in sent if m["content"].startswith("Relevant passages"))
    assert "[1] beekeeping.html" in note and "oxalic acid in midwinter" in note

    # and the reply is stored with the citations
    reply = next(m for m in await user.messages(session["id"]) if m["role"] == "assistant")
    stored = [{k: v for k, v in c.items() if v is not None} for c in reply["citations"]]
    assert stored == rag["data"]["citations"]
    async with db() as session:  # on the reply's own row, not only joined in when read
        row = await session.get(Message, int(reply["id"]))
    assert row is not None and row.citations
    assert [{k: v for k, v in c.items() if v is not None} for c in row.citations] == stored


async def test_memory_api_is_what_the_agent_remembers(user: Api, llm: LLMServerThread) -> None:
    agent = await user.create_agent(chain=["AG_MEMORY_LOAD", "AG_SELF_GEN"])
    base = f"/agents/{agent['id']}/memory"
    r = await user.request("POST", base, json={"key": "name", "value": "Ada"})
    assert r.status_code == 201 and r.json()["scope"] == "user"
    mine = r.json()
    r = await user.request(
        "POST", base, json={"key": "house_rule", "value": "answer in French", "scope": "agent"}
    )
    assert r.status_code == 201
    # writing a key again replaces its value
    r = await user.request("POST", base, json={"key": "name", "value": "Ada Lovelace"})
    assert r.json()["id"] == mine["id"] and r.json()["value"] == "Ada Lovelace"

    items = (await user.request("GET", base)).json()["items"]
    assert {(i["key"], i["value"], i["scope"]) for i in items} == {
        ("house_rule", "answer in French", "agent"),
        ("name", "Ada Lovelace", "user"),
    }
    assert [i["key"] for i in (await user.request("GET", "/memory")).json()["items"]] == ["name"]

    session = await user.create_session(agent["id"])
    marker = uuid.uuid4().hex
    await user.stream_turn(session["id"], f"who am I? {marker}")
    sent = next(r["body"]["messages"] for r in llm.llm.requests if marker in json.dumps(r["body"]))
    note = next(m["content"] for m in sent if m["content"].startswith("What you remember"))
    assert "name: Ada Lovelace" in note and "house_rule: answer in French" in note

    r = await user.request("DELETE", f"/memory/{mine['id']}")
    assert r.status_code == 204
    assert [i["key"] for i in (await user.request("GET", base)).json()["items"]] == ["house_rule"]
    r = await user.request("DELETE", f"{base}/{mine['id']}")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


async def test_other_users_resources_are_404(user: Api, other_user: Api) -> None:
    kb = await new_kb(user)
    doc = await upload(user, kb["id"], "chess.md", (CORPUS / "chess.md").read_bytes())
    agent = await user.create_agent()
    entry = (
        await user.request("POST", f"/agents/{agent['id']}/memory", json={"key": "k", "value": "v"})
    ).json()
    k, d = kb["id"], doc["id"]
    attempts = [
        ("GET", f"/knowledge-bases/{k}", None),
        ("DELETE", f"/knowledge-bases/{k}", None),
        ("GET", f"/knowledge-bases/{k}/documents", None),
        ("GET", f"/knowledge-bases/{k}/documents/{d}", None),
        ("DELETE", f"/knowledge-bases/{k}/documents/{d}", None),
        ("POST", f"/knowledge-bases/{k}/documents/{d}/retry", None),
        ("POST", f"/knowledge-bases/{k}/search", {"query": "chess"}),
        ("GET", f"/agents/{agent['id']}/knowledge-bases", None),
        ("GET", f"/agents/{agent['id']}/memory", None),
        ("DELETE", f"/agents/{agent['id']}/memory/{entry['id']}", None),
        ("DELETE", f"/memory/{entry['id']}", None),
        ("GET", "/knowledge-bases/not-a-number", None),
    ]
    for method, path, body in attempts:
        r = await other_user.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"] == PROBLEM
    r = await other_user.request(
        "POST", f"/knowledge-bases/{k}/documents", files={"file": ("x.txt", b"x")}
    )
    assert r.status_code == 404
    # nor can anyone attach a knowledge base that is not theirs
    theirs = await other_user.create_agent()
    r = await other_user.request(
        "PUT", f"/agents/{theirs['id']}/knowledge-bases", json={"knowledge_base_ids": [k]}
    )
    assert r.status_code == 404
    assert (await other_user.request("GET", "/knowledge-bases")).json() == []
    assert (await other_user.request("GET", "/memory")).json() == {"items": []}
    # everything is still there for its owner
    assert (await user.request("GET", f"/knowledge-bases/{k}/documents/{d}")).status_code == 200
    await settled(user, k, d)
    r = await user.request("DELETE", f"/knowledge-bases/{k}")
    assert r.status_code == 204
    assert (await user.request("GET", f"/knowledge-bases/{k}")).status_code == 404
