"""The index on both databases: documents go through the ingestion steps (parse → chunk →
embed through the scripted server's embeddings endpoint with the real `openai` client →
index), then hybrid search must rank the passage that answers each question first."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from openai import AsyncOpenAI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatee.config import Rag, Settings
from chatee.db import create_engine, session_factory
from chatee.devtools.llm_server import LLMServerThread
from chatee.ids import new_id
from chatee.llm import ClientPool
from chatee.models import KbChunk, KbDocument, KnowledgeBase
from chatee.rag import documents
from chatee.rag.embed import embed_texts
from chatee.rag.index import SearchParams, lexical_search
from chatee.rag.parse import media_type_for
from chatee.rag.search import Retriever

CORPUS = Path(__file__).parent / "data" / "rag"
RAG = Rag(chunk_size=300, chunk_overlap=60, embed_batch_size=8)

# question → words only the passage that answers it contains
QUESTIONS = [
    ("How often does the Grey Point lens turn?", "every twenty seconds"),
    ("When does the keeper start the foghorn?", "diaphone foghorn"),
    ("Where does the keeper store the paraffin?", "oil house"),
    ("Where is the log book sent at the end of the year?", "Northern Lights Board"),
    ("How many eggs does the queen lay each day?", "two thousand eggs"),
    ("How often should I inspect the brood frames?", "seven to ten days"),
    ("When do I treat varroa mites with oxalic acid?", "in midwinter"),
    ("Which frames are ready for harvesting honey?", "three quarters"),
    ("Why do colonies swarm?", "run out of space"),
    ("How many seismometers are around the summit crater?", "fourteen seismometers"),
    ("What do high sulphur dioxide emissions mean?", "fresh magma"),
    ("How far did the north flank rise during the 2019 unrest?", "eleven centimetres"),
    ("Which village did the 1961 lava flow destroy?", "Sorrel"),
    ("Who is warned when volcanic ash rises above six kilometres?", "Advisory Centre"),
    ("When and where does the chess club meet?", "library annex"),
    ("How much is the membership fee for juniors?", "twenty euros"),
    ("What time control do league matches use?", "ninety minutes"),
    ("What happens when a mobile phone rings during a rated game?", "loses that game"),
    ("Who teaches the openings course?", "Marta Kowalski"),
    ("What temperature is the drum roaster preheated to?", "two hundred degrees"),
    ("When does first crack arrive?", "nine minutes"),
    ("How long must roasted beans rest before brewing?", "three days"),
    ("How often is the chaff collector emptied?", "every fifth batch"),
    ("How are green coffee beans stored?", "jute sacks"),
]


@dataclass
class Corpus:
    factory: async_sessionmaker[AsyncSession]
    retriever: Retriever
    kb_id: int
    documents: dict[str, int]


async def ingest(
    factory: async_sessionmaker[AsyncSession],
    client: AsyncOpenAI,
    kb_id: int,
    name: str,
    data: bytes,
    rag: Rag = RAG,
) -> int:
    """What the IngestDocument workflow does, step by step, without Temporal."""
    doc_id = new_id()
    async with factory() as db:
        db.add(
            KbDocument(
                id=doc_id, knowledge_base_id=kb_id, name=name,
                media_type=media_type_for(name, None), status="pending", version=1,
                content_hash=documents.content_hash(data), size_bytes=len(data), content=data,
                chunks_total=0, chunks_embedded=0,
            )
        )  # fmt: skip
        await db.commit()
    total = await documents.prepare(factory, doc_id, 1, rag)
    for start in range(0, total, rag.embed_batch_size):
        end = min(start + rag.embed_batch_size, total)
        await documents.embed_batch(factory, client, rag, doc_id, 1, start, end)
    await documents.finish(factory, doc_id, 1, "ready")
    return doc_id


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def client(llm: LLMServerThread) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
async def corpus(engine: AsyncEngine, client: AsyncOpenAI, llm: LLMServerThread) -> Corpus:
    factory = session_factory(engine)
    kb_id = new_id()
    async with factory() as db:
        db.add(KnowledgeBase(id=kb_id, owner_id=new_id(), name="corpus", description="", version=0))
        await db.commit()
    docs = {}
    for path in sorted(CORPUS.iterdir()):
        docs[path.name] = await ingest(factory, client, kb_id, path.name, path.read_bytes())
    settings = Settings(llm_openai_base_url=llm.base_url, llm_openai_api_key="sk-test", rag=RAG)
    return Corpus(factory, Retriever(settings, ClientPool(settings)), kb_id, docs)


async def test_ingestion_stores_every_chunk_with_its_embedding(corpus: Corpus) -> None:
    async with corpus.factory() as db:
        rows = (
            await db.execute(select(KbDocument).where(KbDocument.knowledge_base_id == corpus.kb_id))
        ).scalars()
        for doc in rows:
            assert doc.status == "ready" and doc.error is None
            assert doc.chunks_total == doc.chunks_embedded > 1
            stored = await db.scalar(
                select(func.count()).where(
                    KbChunk.document_id == doc.id, KbChunk.embedding.is_not(None)
                )
            )
            assert stored == doc.chunks_total


async def test_the_right_passage_ranks_first(corpus: Corpus) -> None:
    misses = []
    async with corpus.factory() as db:
        for question, answer in QUESTIONS:
            hits = await corpus.retriever.search(db, [corpus.kb_id], question, top_k=3)
            if not hits or answer not in " ".join(hits[0].text.split()):
                misses.append((question, answer, [h.text[:80] for h in hits]))
    assert not misses, misses


async def test_both_retrievers_contribute(corpus: Corpus) -> None:
    async with corpus.factory() as db:
        # words the corpus has: both rank the passage; the fused score is the best possible
        hits = await corpus.retriever.search(db, [corpus.kb_id], "Marta Kowalski openings")
        assert hits[0].lexical_rank == 1 and hits[0].vector_rank == 1 and hits[0].score == 1.0
        # one retriever alone (here: vectors only, no words to match) scores half
        client = corpus.retriever.clients.get("openai")
        vector = (await embed_texts(client, "m", ["Marta Kowalski openings"]))[0]
        params = SearchParams(top_k=1)
        hits = await corpus.retriever.index.search(db, [corpus.kb_id], "", vector, params)
        assert hits and "Marta Kowalski" in hits[0].text
        assert hits[0].lexical_rank is None and hits[0].vector_rank == 1 and hits[0].score == 0.5


async def test_threshold_and_top_k(corpus: Corpus) -> None:
    async with corpus.factory() as db:
        many = await corpus.retriever.search(db, [corpus.kb_id], "the queen and the bees", 10)
        assert 3 < len(many) <= 10
        assert [h.score for h in many] == sorted((h.score for h in many), reverse=True)
        strict = await corpus.retriever.search(
            db, [corpus.kb_id], "the queen and the bees", 10, threshold=0.9
        )
        assert strict == [h for h in many if h.score >= 0.9][: len(strict)]
        assert len(strict) < len(many)
        nothing = await corpus.retriever.search(db, [corpus.kb_id], "zebra quantum xylophone")
        assert nothing == []


async def test_other_knowledge_bases_are_not_searched(corpus: Corpus, client: AsyncOpenAI) -> None:
    factory = corpus.factory
    other = new_id()
    async with factory() as db:
        db.add(KnowledgeBase(id=other, owner_id=new_id(), name="other", description="", version=0))
        await db.commit()
    marker = uuid.uuid4().hex
    await ingest(factory, client, other, "other.txt", f"The zeppelin {marker} hangar.".encode())
    async with factory() as db:
        assert await corpus.retriever.search(db, [corpus.kb_id], f"zeppelin {marker}") == []
        found = await corpus.retriever.search(db, [other], f"zeppelin {marker}")
        assert [h.text for h in found] == [f"The zeppelin {marker} hangar."]


async def test_deleting_a_document_drops_it_from_both_indexes(
    corpus: Corpus, client: AsyncOpenAI
) -> None:
    factory, kb = corpus.factory, corpus.kb_id
    marker = uuid.uuid4().hex
    doc_id = await ingest(
        factory, client, kb, "temp.md", f"# Airship {marker}\n\nIt floats.".encode()
    )
    async with factory() as db:
        # warm the vector matrix, then delete: the version bump makes it reload
        assert (await corpus.retriever.search(db, [kb], f"airship {marker}"))[
            0
        ].document_id == doc_id
        await documents.delete_document(db, await db.get(KbDocument, doc_id))
    async with factory() as db:
        left = await db.scalar(select(func.count()).where(KbChunk.document_id == doc_id))
        assert left == 0
        assert await corpus.retriever.search(db, [kb], f"airship {marker}") == []
        vector_only = await corpus.retriever.index.vectors.search(
            db, {kb: (await db.get(KnowledgeBase, kb)).version}, _unit(client), 1000, -1.0
        )
        assert vector_only  # the rest of the corpus is still there
        async with factory() as db2:
            ids = set((await db2.execute(select(KbChunk.id))).scalars())
        assert {cid for cid, _ in vector_only} <= ids


def _unit(client: AsyncOpenAI) -> np.ndarray:
    from chatee.devtools.llm_server import EMBEDDING_DIMENSIONS

    vector = np.ones(EMBEDDING_DIMENSIONS, dtype=np.float32)
    return vector / np.linalg.norm(vector)


async def test_a_small_knowledge_base_is_not_crowded_out(corpus: Corpus) -> None:
    """Hundreds of better matches in someone else's knowledge base do not hide this one's."""
    factory, word = corpus.factory, f"w{uuid.uuid4().hex[:10]}"
    big, small = new_id(), new_id()
    async with factory() as db:
        for kb in (big, small):
            db.add(KnowledgeBase(id=kb, owner_id=new_id(), name="kb", description="", version=0))
        await db.commit()
    crowd = [(f"{word} {word} {word} crowd {i}", 0, 0) for i in range(700)]
    vectors = np.ones((700, 8), dtype=np.float32)
    await documents.add_indexed_document(factory, big, "crowd.txt", crowd, vectors)
    await documents.add_indexed_document(
        factory, small, "mine.txt", [(f"a long passage that mentions {word} once", 0, 0)], vectors
    )
    async with factory() as db:
        found = await lexical_search(db, [small], word, 50)
        assert len(found) == 1
        assert len(await lexical_search(db, [big], word, 50)) == 50


async def test_a_new_document_is_appended_to_the_cached_vectors(
    corpus: Corpus, client: AsyncOpenAI
) -> None:
    factory, kb, vectors = corpus.factory, corpus.kb_id, corpus.retriever.index.vectors
    async with factory() as db:
        await corpus.retriever.search(db, [kb], "lighthouse lamp")  # the matrix is current
    loads, appends = vectors.loads, vectors.appends
    marker = uuid.uuid4().hex
    doc_id = await ingest(factory, client, kb, "new.md", f"Hovercraft {marker} timetable.".encode())
    async with factory() as db:
        hits = await corpus.retriever.search(db, [kb], f"hovercraft {marker} timetable")
        assert hits[0].document_id == doc_id and hits[0].vector_rank == 1
    assert (vectors.loads, vectors.appends) == (loads, appends + 1)  # not reloaded whole
    async with factory() as db:
        await documents.delete_document(db, await db.get(KbDocument, doc_id))
    async with factory() as db:  # a deletion cannot be appended: the matrix is reloaded
        hits = await corpus.retriever.search(db, [kb], f"hovercraft {marker} timetable")
        # (the random marker's hashed trigrams can land near another document now and then)
        assert doc_id not in {hit.document_id for hit in hits}
    assert vectors.loads == loads + 1
