"""Knowledge bases, RAG and memory end to end: the real API and worker processes, Temporal
running the `IngestDocument` workflow, the scripted LLM server for embeddings and replies."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.client import ApiError, Client, NotFound, StepCompleted, TurnCompleted
from chatee.db import create_engine, session_factory
from chatee.devtools.llm_server import LLMServerThread
from chatee.models import KbChunk, Message
from tests.support import Api, new_agent, stored_messages, turn_events

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


async def test_upload_search_reupload_delete(
    chatee: Client, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await chatee.create_knowledge_base("handbook")
    lighthouse = (CORPUS / "lighthouse.md").read_bytes()
    doc = await chatee.upload_document(kb.id, "lighthouse.md", lighthouse)
    assert doc.status == "pending" and doc.media_type == "text/markdown"
    doc = await chatee.wait_for_document(kb.id, doc.id)
    assert doc.status == "ready", doc
    total = doc.progress.chunks_total
    assert total > 0 and doc.progress.chunks_embedded == total

    hits = await chatee.search_knowledge(kb.id, "Where does the keeper store the paraffin?")
    assert "oil house" in hits[0].text and hits[0].document_name == "lighthouse.md"
    source = (CORPUS / "lighthouse.md").read_text()
    assert source[hits[0].start : hits[0].end] == hits[0].text  # offsets into the file

    # re-upload: the new version replaces every chunk of the old one
    marker = uuid.uuid4().hex[:12]
    new_text = f"# Grey Point, rebuilt\n\nThe tower now has an LED lamp, code {marker}.\n"
    doc2 = await chatee.replace_document(kb.id, doc.id, "lighthouse.md", new_text.encode())
    assert doc2.version == 2
    doc2 = await chatee.wait_for_document(kb.id, doc.id)
    assert doc2.status == "ready", doc2
    led = await chatee.search_knowledge(kb.id, f"LED lamp {marker}")
    assert [h.text for h in led][0].endswith(f"code {marker}.")
    old = await chatee.search_knowledge(kb.id, "paraffin oil house")
    assert not [h for h in old if h.score > 0]
    rows = await chunk_rows(db, doc.id)
    assert rows == [(i, 2) for i in range(doc2.progress.chunks_total)]

    assert [d.id for d in await chatee.documents(kb.id)] == [doc.id]
    assert (await chatee.knowledge_base(kb.id)).documents == 1

    doc_path = f"/knowledge-bases/{kb.id}/documents/{doc.id}"
    assert (await Api.of(chatee).request("DELETE", doc_path)).status_code == 204
    assert await chunk_rows(db, doc.id) == []
    assert await chatee.search_knowledge(kb.id, f"LED lamp {marker}") == []
    with pytest.raises(NotFound):
        await chatee.document(kb.id, doc.id)


async def test_a_failed_document_is_retried_without_duplicates(
    chatee: Client, llm: LLMServerThread, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await chatee.create_knowledge_base("handbook")
    broken = await chatee.upload_document(kb.id, "broken.pdf", b"%PDF-1.4\nnot a pdf at all")
    broken = await chatee.wait_for_document(kb.id, broken.id)
    assert broken.status == "failed" and "cannot be read" in (broken.error or ""), broken
    assert await chunk_rows(db, broken.id) == []

    # the embeddings provider refuses the first request for this document
    marker = uuid.uuid4().hex
    llm.llm.fail_embeddings(marker, times=1, status=400)
    text = "\n\n".join(f"Paragraph {i} about {marker} and the tide tables." for i in range(40))
    doc = await chatee.upload_document(kb.id, "tides.txt", text.encode())
    doc = await chatee.wait_for_document(kb.id, doc.id)
    assert doc.status == "failed" and "rejected" in (doc.error or ""), doc
    assert await chunk_rows(db, doc.id) == []

    retry = f"/knowledge-bases/{kb.id}/documents/{doc.id}/retry"
    r = await Api.of(chatee).request("POST", retry)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    doc = await chatee.wait_for_document(kb.id, doc.id)
    assert doc.status == "ready" and doc.error is None
    total = doc.progress.chunks_total
    assert total > 1 and doc.progress.chunks_embedded == total
    assert await chunk_rows(db, doc.id) == [(i, 1) for i in range(total)]
    assert marker in (await chatee.search_knowledge(kb.id, f"{marker} tide"))[0].text

    # a provider hiccup (500) is retried by Temporal: the document gets ready by itself, and
    # the batch that failed is embedded once
    hiccup = uuid.uuid4().hex
    llm.llm.fail_embeddings(hiccup, times=1, status=500)
    text = "\n\n".join(f"Paragraph {i} about {hiccup} and the harbour." for i in range(40))
    flaky = await chatee.upload_document(kb.id, "harbour.txt", text.encode())
    flaky = await chatee.wait_for_document(kb.id, flaky.id)
    assert flaky.status == "ready", flaky
    assert llm.llm.embedding_failure([hiccup]) is None  # the armed failure was used
    total = flaky.progress.chunks_total
    assert flaky.progress.chunks_embedded == total
    assert await chunk_rows(db, flaky.id) == [(i, 1) for i in range(total)]

    # only a failed document can be retried
    r = await Api.of(chatee).request("POST", retry)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM


async def test_bad_uploads_are_problems(chatee: Client) -> None:
    kb = await chatee.create_knowledge_base("handbook")
    path = f"/knowledge-bases/{kb.id}/documents"
    api = Api.of(chatee)
    r = await api.request("POST", path, files={"file": ("photo.png", b"\x89PNG", "image/png")})
    assert r.status_code == 415 and r.headers["content-type"] == PROBLEM
    r = await api.request("POST", path, files={"file": ("empty.txt", b"")})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = await api.request("POST", path, json={"file": "not multipart"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert await chatee.documents(kb.id) == []


async def test_documents_may_be_larger_than_other_requests(chatee: Client) -> None:
    """Uploads have their own limit (limits.max_upload_bytes, 10 MiB) above the 1 MiB default."""
    kb = await chatee.create_knowledge_base("handbook")
    big = ("The harbour light turns every night. " * 32_000).encode()  # ~1.2 MiB
    doc = await chatee.upload_document(kb.id, "harbour.txt", big)
    assert doc.name == "harbour.txt"
    path = f"/knowledge-bases/{kb.id}/documents"
    assert (await Api.of(chatee).request("DELETE", f"{path}/{doc.id}")).status_code == 204
    too_big = b"x" * (10 * 1024 * 1024 + 1)
    r = await Api.of(chatee).request("POST", path, files={"file": ("huge.txt", too_big)})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
    with pytest.raises(ApiError) as refused:  # everything else keeps the request limit
        await chatee.create_agent("a", system_prompt="x" * len(big))
    assert refused.value.status == 413


async def test_agent_turn_cites_its_knowledge_base(
    chatee: Client, llm: LLMServerThread, db: async_sessionmaker[AsyncSession]
) -> None:
    kb = await chatee.create_knowledge_base("bees")
    html = (CORPUS / "beekeeping.html").read_bytes()
    doc = await chatee.upload_document(kb.id, "beekeeping.html", html)
    assert (await chatee.wait_for_document(kb.id, doc.id)).status == "ready"
    agent = await new_agent(chatee, chain=["AG_RAG", "AG_SELF_GEN"])
    attached = await chatee.set_agent_knowledge_bases(agent.id, [kb.id])
    assert attached.knowledge_base_ids == [kb.id]
    assert (await chatee.agent_knowledge_bases(agent.id)).knowledge_base_ids == [kb.id]
    session = await chatee.create_session(agent.id)

    marker = uuid.uuid4().hex
    events = await turn_events(chatee, session.id, f"When should I treat varroa mites? {marker}")
    rag = next(e for e in events if isinstance(e, StepCompleted))
    assert rag.action == "AG_RAG"
    first = rag.citations[0]
    assert first["document_id"] == doc.id and first["document_name"] == "beekeeping.html"
    assert first["chunk_id"] and first["end"] > first["start"] >= 0 and first["score"] > 0
    assert isinstance(events[-1], TurnCompleted)

    # the model was given the passage
    sent = next(r["body"]["messages"] for r in llm.llm.requests if marker in json.dumps(r["body"]))
    note = next(m["content"] for m in sent if m["content"].startswith("Relevant passages"))
    assert "[1] beekeeping.html" in note and "oxalic acid in midwinter" in note

    # and the reply is stored with the citations
    reply = next(m for m in await stored_messages(chatee, session.id) if m.role == "assistant")
    assert reply.citations is not None
    stored = [{k: v for k, v in c.items() if v is not None} for c in reply.citations]
    assert stored == rag.citations
    async with db() as s:  # on the reply's own row, not only joined in when read
        row = await s.get(Message, int(reply.id))
    assert row is not None and row.citations
    assert [{k: v for k, v in c.items() if v is not None} for c in row.citations] == stored


async def test_memory_api_is_what_the_agent_remembers(chatee: Client, llm: LLMServerThread) -> None:
    agent = await new_agent(chatee, chain=["AG_MEMORY_LOAD", "AG_SELF_GEN"])
    base = f"/agents/{agent.id}/memory"
    api = Api.of(chatee)
    r = await api.request("POST", base, json={"key": "name", "value": "Ada"})
    assert r.status_code == 201 and r.json()["scope"] == "user"
    mine = r.json()
    r = await api.request(
        "POST", base, json={"key": "house_rule", "value": "answer in French", "scope": "agent"}
    )
    assert r.status_code == 201
    # writing a key again replaces its value
    again = await chatee.add_agent_memory(agent.id, "name", "Ada Lovelace")
    assert again.id == mine["id"] and again.value == "Ada Lovelace"

    items = await chatee.agent_memory(agent.id)
    assert {(i.key, i.value, i.scope) for i in items} == {
        ("house_rule", "answer in French", "agent"),
        ("name", "Ada Lovelace", "user"),
    }
    assert [i.key for i in await chatee.my_memory()] == ["name"]

    session = await chatee.create_session(agent.id)
    marker = uuid.uuid4().hex
    await chatee.stream_turn(session.id, f"who am I? {marker}").run()
    sent = next(r["body"]["messages"] for r in llm.llm.requests if marker in json.dumps(r["body"]))
    note = next(m["content"] for m in sent if m["content"].startswith("What you remember"))
    assert "name: Ada Lovelace" in note and "house_rule: answer in French" in note

    r = await api.request("DELETE", f"/memory/{mine['id']}")
    assert r.status_code == 204
    assert [i.key for i in await chatee.agent_memory(agent.id)] == ["house_rule"]
    r = await api.request("DELETE", f"{base}/{mine['id']}")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


async def test_other_users_resources_are_404(chatee: Client, other_chatee: Client) -> None:
    kb = await chatee.create_knowledge_base("handbook")
    doc = await chatee.upload_document(kb.id, "chess.md", (CORPUS / "chess.md").read_bytes())
    agent = await new_agent(chatee)
    memory = f"/agents/{agent.id}/memory"
    entry = await chatee.add_agent_memory(agent.id, "k", "v")
    k, d = kb.id, doc.id
    attempts = [
        ("GET", f"/knowledge-bases/{k}", None),
        ("DELETE", f"/knowledge-bases/{k}", None),
        ("GET", f"/knowledge-bases/{k}/documents", None),
        ("GET", f"/knowledge-bases/{k}/documents/{d}", None),
        ("DELETE", f"/knowledge-bases/{k}/documents/{d}", None),
        ("POST", f"/knowledge-bases/{k}/documents/{d}/retry", None),
        ("POST", f"/knowledge-bases/{k}/search", {"query": "chess"}),
        ("GET", f"/agents/{agent.id}/knowledge-bases", None),
        ("GET", memory, None),
        ("DELETE", f"{memory}/{entry.id}", None),
        ("DELETE", f"/memory/{entry.id}", None),
        ("GET", "/knowledge-bases/not-a-number", None),
    ]
    other = Api.of(other_chatee)
    for method, path, body in attempts:
        r = await other.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"] == PROBLEM
    with pytest.raises(NotFound):
        await other_chatee.upload_document(k, "x.txt", b"x")
    # nor can anyone attach a knowledge base that is not theirs
    theirs = await new_agent(other_chatee)
    with pytest.raises(NotFound):
        await other_chatee.set_agent_knowledge_bases(theirs.id, [k])
    assert await other_chatee.knowledge_bases() == []
    assert await other_chatee.my_memory() == []
    # everything is still there for its owner
    assert (await chatee.document(k, d)).id == d
    await chatee.wait_for_document(k, d)
    assert (await Api.of(chatee).request("DELETE", f"/knowledge-bases/{k}")).status_code == 204
    with pytest.raises(NotFound):
        await chatee.knowledge_base(k)
