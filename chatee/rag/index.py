"""Hybrid retrieval over knowledge bases: a lexical top-N (SQLite FTS5 / MySQL FULLTEXT) and a
vector top-N (cosine over the chunks' embeddings), fused by reciprocal rank.

The vector side sits behind `VectorIndex`. The default, `MatrixVectorIndex`, keeps one numpy
matrix per knowledge base in process memory, loaded lazily from SQL and reloaded when the
knowledge base's `version` moves; brute force over 100k × a few hundred dims takes a few ms.
A dedicated vector database plugs in by implementing `VectorIndex.search` (and being fed the
same embeddings at ingestion).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from chatee.models import KbChunk, KbDocument, KnowledgeBase
from chatee.rag.embed import DTYPE

WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32
POSTINGS_BUDGET = 5_000  # rows the lexical ranking may score per query (SQLite)
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from",
    "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no",
    "not", "of", "on", "or", "our", "so", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "why", "will", "with", "would", "you", "your",
})  # fmt: skip


@dataclass
class SearchParams:
    top_k: int = 4
    candidates: int = 50  # per retriever, before fusion
    rrf_k: int = 60
    score_threshold: float = 0.0  # on the fused score, normalised to 0–1
    min_similarity: float = 0.2  # vector candidates below this cosine are dropped


@dataclass
class Hit:
    chunk_id: int
    knowledge_base_id: int
    document_id: int
    document_name: str
    ordinal: int
    start: int
    end: int
    text: str
    score: float  # 1.0 = ranked first by both retrievers
    lexical_rank: int | None = None
    vector_rank: int | None = None
    similarity: float | None = None

    def citation(self) -> dict[str, Any]:
        return {
            "document_id": str(self.document_id),
            "document_name": self.document_name,
            "knowledge_base_id": str(self.knowledge_base_id),
            "chunk_id": str(self.chunk_id),
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
        }


class VectorIndex(Protocol):
    async def warm(self, db: AsyncSession, knowledge_bases: dict[int, int]) -> None:
        """Load what `search` needs from SQL (if anything): `search` then runs beside the
        lexical query and must not use `db` itself."""
        ...

    async def search(
        self,
        db: AsyncSession,
        knowledge_bases: dict[int, int],  # id → version
        query: np.ndarray,
        n: int,
        min_similarity: float,
    ) -> list[tuple[int, float]]:
        """The `n` most similar chunk ids (of ready documents) with their cosine, best first."""
        ...


@dataclass
class _Matrix:
    version: int
    ids: np.ndarray  # int64 chunk ids
    vectors: np.ndarray  # float32, one L2-normalised row per chunk

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.vectors.nbytes)


@dataclass
class MatrixVectorIndex:
    """Brute-force cosine over an in-process matrix per knowledge base (LRU, bounded bytes)."""

    max_bytes: int = 512 * 1024 * 1024
    loads: int = 0  # full loads from SQL
    appends: int = 0  # new chunks added to a cached matrix without reloading it
    _cache: OrderedDict[tuple[str, int], _Matrix] = field(default_factory=OrderedDict)
    _locks: dict[tuple[str, int], asyncio.Lock] = field(default_factory=dict)

    async def search(
        self,
        db: AsyncSession,
        knowledge_bases: dict[int, int],
        query: np.ndarray,
        n: int,
        min_similarity: float,
    ) -> list[tuple[int, float]]:
        matrices = [await self.matrix(db, kb, version) for kb, version in knowledge_bases.items()]
        q = np.asarray(query, dtype=np.float32)
        # numpy releases the GIL: the scan runs on a thread, beside the event loop
        return await asyncio.to_thread(_scan, matrices, q, n, min_similarity)

    async def warm(self, db: AsyncSession, knowledge_bases: dict[int, int]) -> None:
        for kb, version in knowledge_bases.items():
            await self.matrix(db, kb, version)

    async def matrix(self, db: AsyncSession, kb_id: int, version: int) -> _Matrix:
        key = (_db_key(db), kb_id)
        cached = self._cache.get(key)
        if cached is not None and cached.version == version:
            self._cache.move_to_end(key)
            return cached
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._cache.get(key)
            if cached is None or cached.version != version:
                appended = await _append(db, kb_id, version, cached) if cached else None
                if appended is not None:
                    self.appends += 1
                    cached = appended
                else:
                    self.loads += 1
                    cached = await _load_matrix(db, kb_id, version)
                self._cache[key] = cached
                self._evict()
            self._cache.move_to_end(key)
            return cached

    def _evict(self) -> None:
        total = sum(m.nbytes for m in self._cache.values())
        while len(self._cache) > 1 and total > self.max_bytes:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes


def _scan(
    matrices: list[_Matrix], q: np.ndarray, n: int, min_similarity: float
) -> list[tuple[int, float]]:
    found: list[tuple[int, float]] = []
    for matrix in matrices:
        if not len(matrix.ids) or matrix.vectors.shape[1] != q.shape[0]:
            continue
        scores = matrix.vectors @ q
        take = min(n, len(scores))
        best = np.argpartition(-scores, take - 1)[:take]
        found.extend(
            (int(matrix.ids[i]), float(scores[i])) for i in best if scores[i] >= min_similarity
        )
    found.sort(key=lambda pair: (-pair[1], pair[0]))
    return found[:n]


def _searchable(kb_id: int) -> list[Any]:
    return [
        KbChunk.knowledge_base_id == kb_id,
        KbDocument.status == "ready",
        KbChunk.embedding.is_not(None),
    ]


CHECKSUM_MOD = 1_000_003


async def _append(db: AsyncSession, kb_id: int, version: int, old: _Matrix) -> _Matrix | None:
    """The cached matrix plus chunks newer than any it holds, if that is exactly every chunk
    the knowledge base now has (same count and id checksum); None means reload it whole. A new
    document in a 100k-chunk knowledge base then costs its own rows, not 100k."""
    if not len(old.ids):
        return None
    # every chunk of the knowledge base (one covering index scan): while any document is
    # still being ingested this differs from the matrix, and the matrix is simply reloaded
    stats = select(func.count(), func.sum(KbChunk.id % CHECKSUM_MOD)).where(
        KbChunk.knowledge_base_id == kb_id
    )
    count, checksum = (await db.execute(stats)).one()
    newer = (
        select(KbChunk.id, KbChunk.embedding)
        .join(KbDocument, KbDocument.id == KbChunk.document_id)
        .where(*_searchable(kb_id), KbChunk.id > int(old.ids.max()))
    )
    rows = (await db.execute(newer)).all()
    width = old.vectors.shape[1] * DTYPE.itemsize
    if any(len(blob) != width for _, blob in rows):
        return None
    ids = np.concatenate([old.ids, np.fromiter((cid for cid, _ in rows), np.int64, len(rows))])
    if len(ids) != count or int(np.sum(ids % CHECKSUM_MOD)) != int(checksum or 0):
        return None  # something was deleted or became ready out of id order
    added = np.frombuffer(b"".join(blob for _, blob in rows), dtype=DTYPE)
    added = added.reshape(len(rows), old.vectors.shape[1]).astype(np.float32)
    return _Matrix(version, ids, np.concatenate([old.vectors, added]))


async def _load_matrix(db: AsyncSession, kb_id: int, version: int) -> _Matrix:
    stmt = (
        select(KbChunk.id, KbChunk.embedding)
        .join(KbDocument, KbDocument.id == KbChunk.document_id)
        .where(*_searchable(kb_id))
    )
    rows = (await db.execute(stmt)).all()
    if not rows:
        return _Matrix(version, np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    # the most common width wins: chunks embedded by an older model are skipped
    widths: dict[int, int] = {}
    for _, blob in rows:
        widths[len(blob)] = widths.get(len(blob), 0) + 1
    width = max(widths, key=lambda w: widths[w])
    kept = [(cid, blob) for cid, blob in rows if len(blob) == width]
    ids = np.fromiter((cid for cid, _ in kept), dtype=np.int64, count=len(kept))
    vectors = np.frombuffer(b"".join(blob for _, blob in kept), dtype=DTYPE)
    vectors = vectors.reshape(len(kept), width // DTYPE.itemsize).astype(np.float32)
    return _Matrix(version, ids, vectors)


def _db_key(db: AsyncSession) -> str:
    bind = db.bind
    return str(getattr(bind, "url", id(bind)))


def query_terms(query: str) -> list[str]:
    """Distinct lower-case words worth matching on (no stop words), at most MAX_TERMS."""
    seen: dict[str, None] = {}
    for word in WORD.findall(query.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


async def lexical_search(
    db: AsyncSession, kb_ids: list[int], query: str, n: int
) -> list[tuple[int, float]]:
    """The `n` best chunk ids by full-text relevance (higher is better), best first."""
    terms = query_terms(query)
    if not terms or not kb_ids:
        return []
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        return await _fts5_search(db, kb_ids, await _affordable_terms(db, terms), n)
    return await _fulltext_search(db, kb_ids, " ".join(terms), n)


# InnoDB ranks `WHERE MATCH … ORDER BY MATCH … DESC LIMIT m` without sorting every match, as
# long as nothing else is in the WHERE clause: rank first, filter by knowledge base after
FULLTEXT_TOP = (
    "SELECT f.id, f.score FROM (SELECT id, MATCH(text) AGAINST (:q IN NATURAL LANGUAGE MODE) "
    "AS score FROM kb_chunks WHERE MATCH(text) AGAINST (:q IN NATURAL LANGUAGE MODE) "
    "ORDER BY score DESC LIMIT :m) f STRAIGHT_JOIN kb_chunks c ON c.id = f.id "
    "JOIN kb_documents d ON d.id = c.document_id "
    "WHERE d.status = 'ready' AND c.knowledge_base_id IN :kbs ORDER BY f.score DESC"
)
FULLTEXT_FILTERED = (
    "SELECT c.id, MATCH(c.text) AGAINST (:q IN NATURAL LANGUAGE MODE) AS score "
    "FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id "
    "WHERE MATCH(c.text) AGAINST (:q IN NATURAL LANGUAGE MODE) "
    "AND c.knowledge_base_id IN :kbs AND d.status = 'ready' ORDER BY score DESC LIMIT :m"
)


async def _fulltext_search(
    db: AsyncSession, kb_ids: list[int], query: str, n: int
) -> list[tuple[int, float]]:
    """MySQL/MariaDB: the index's best matches, then this knowledge base's; when others
    crowd them out, the exact (slower) query that filters while ranking."""
    m = 10 * n + 100
    top = text(FULLTEXT_TOP).bindparams(bindparam("kbs", expanding=True))
    rows = (await db.execute(top, {"q": query, "kbs": kb_ids, "m": m})).all()
    if len(rows) < n:
        total = await db.scalar(
            text("SELECT count(*) FROM (SELECT 1 FROM kb_chunks "
                 "WHERE MATCH(text) AGAINST (:q IN NATURAL LANGUAGE MODE) LIMIT :m) t"),
            {"q": query, "m": m},
        )  # fmt: skip
        if total == m:
            exact = text(FULLTEXT_FILTERED).bindparams(bindparam("kbs", expanding=True))
            rows = (await db.execute(exact, {"q": query, "kbs": kb_ids, "m": n})).all()
    return [(int(cid), float(score)) for cid, score in rows[:n]]


FTS5_TOP = (
    "SELECT f.rowid, -f.score FROM (SELECT rowid, bm25(kb_chunks_fts, 1.0, 0.0) AS score "
    "FROM kb_chunks_fts WHERE kb_chunks_fts MATCH :q ORDER BY score LIMIT :m) f "
    # CROSS JOIN pins the order: from the few ranked rows to their chunks, never the reverse
    "CROSS JOIN kb_chunks c ON c.id = f.rowid JOIN kb_documents d ON d.id = c.document_id "
    "WHERE d.status = 'ready' AND c.knowledge_base_id IN :kbs ORDER BY f.score"
)


async def _fts5_search(
    db: AsyncSession, kb_ids: list[int], terms: list[str], n: int
) -> list[tuple[int, float]]:
    """Rank the best matches over the whole index, then keep this knowledge base's ready
    chunks. When other knowledge bases crowd them out, ask again with the knowledge base as
    part of the match (its `kb` column) — exact, but it reads the whole knowledge base's
    posting list, so it is the second choice."""
    words = " OR ".join(f'"{t}"' for t in terms)
    stmt = text(FTS5_TOP).bindparams(bindparam("kbs", expanding=True))
    m = 10 * n + 100
    rows = (await db.execute(stmt, {"q": f"{{text}}: ({words})", "kbs": kb_ids, "m": m})).all()
    if len(rows) < n:
        total = await db.scalar(
            text("SELECT count(*) FROM (SELECT 1 FROM kb_chunks_fts WHERE kb_chunks_fts "
                 "MATCH :q LIMIT :m)"),
            {"q": f"{{text}}: ({words})", "m": m},
        )  # fmt: skip
        if total == m:  # the top m were someone else's: filter inside the index instead
            kbs = " OR ".join(f'"kb{kb}"' for kb in kb_ids)
            match = f"{{text}}: ({words}) AND kb: ({kbs})"
            rows = (await db.execute(stmt, {"q": match, "kbs": kb_ids, "m": m})).all()
    return [(int(cid), float(score)) for cid, score in rows[:n]]


async def _affordable_terms(db: AsyncSession, terms: list[str]) -> list[str]:
    """The rarest terms whose postings add up to at most POSTINGS_BUDGET (at least one): words
    in most chunks say little and make ranking scan them all. Document frequencies come from
    the FTS5 vocabulary (counted over every knowledge base; a stemmed-away form counts as
    rare, so it is kept)."""
    if len(terms) == 1:
        return terms
    stmt = text("SELECT term, doc FROM kb_chunks_vocab WHERE term IN :terms").bindparams(
        bindparam("terms", expanding=True)
    )
    df = {term: int(doc) for term, doc in await db.execute(stmt, {"terms": terms})}
    ordered = sorted(terms, key=lambda t: df.get(t, 0))
    kept, spent = [], 0
    for term in ordered:
        cost = df.get(term, 0)
        if kept and spent + cost > POSTINGS_BUDGET:
            break
        kept.append(term)
        spent += cost
    return kept


def fuse(
    lexical: list[tuple[int, float]], vector: list[tuple[int, float]], rrf_k: int
) -> list[tuple[int, float, int | None, int | None, float | None]]:
    """Reciprocal rank fusion: (chunk id, score 0–1, lexical rank, vector rank, cosine)."""
    ranks: dict[int, list[Any]] = {}
    for rank, (cid, _) in enumerate(lexical, start=1):
        ranks.setdefault(cid, [None, None, None])[0] = rank
    for rank, (cid, sim) in enumerate(vector, start=1):
        entry = ranks.setdefault(cid, [None, None, None])
        entry[1], entry[2] = rank, sim
    best = 2 / (rrf_k + 1)
    fused = []
    for cid, (lex, vec, sim) in ranks.items():
        raw = (1 / (rrf_k + lex) if lex else 0.0) + (1 / (rrf_k + vec) if vec else 0.0)
        fused.append((cid, raw / best, lex, vec, sim))
    fused.sort(key=lambda f: (-f[1], min(r for r in (f[2], f[3]) if r), f[2] or 1 << 30, f[0]))
    return fused


class HybridIndex:
    def __init__(self, vectors: VectorIndex | None = None) -> None:
        self.vectors: VectorIndex = vectors or MatrixVectorIndex()

    async def search(
        self,
        db: AsyncSession,
        kb_ids: list[int],
        query: str,
        query_vector: np.ndarray | None,
        params: SearchParams,
    ) -> list[Hit]:
        if not kb_ids:
            return []
        rows = await db.execute(
            select(KnowledgeBase.id, KnowledgeBase.version).where(KnowledgeBase.id.in_(kb_ids))
        )
        versions = {int(kb): int(version) for kb, version in rows}
        if not versions:
            return []
        vector: list[tuple[int, float]] = []
        if query_vector is not None and np.any(query_vector):
            await self.vectors.warm(db, versions)
            lexical, vector = await asyncio.gather(
                lexical_search(db, list(versions), query, params.candidates),
                self.vectors.search(
                    db, versions, query_vector, params.candidates, params.min_similarity
                ),
            )
        else:
            lexical = await lexical_search(db, list(versions), query, params.candidates)
        fused = [f for f in fuse(lexical, vector, params.rrf_k) if f[1] >= params.score_threshold][
            : params.top_k
        ]
        return await _hydrate(db, fused)


async def _hydrate(
    db: AsyncSession, fused: list[tuple[int, float, int | None, int | None, float | None]]
) -> list[Hit]:
    if not fused:
        return []
    stmt = (
        select(
            KbChunk.id,
            KbChunk.knowledge_base_id,
            KbChunk.document_id,
            KbDocument.name,
            KbChunk.ordinal,
            KbChunk.start_char,
            KbChunk.end_char,
            KbChunk.text,
        )
        .join(KbDocument, KbDocument.id == KbChunk.document_id)
        .where(KbChunk.id.in_([f[0] for f in fused]))
    )
    rows = {row[0]: row for row in await db.execute(stmt)}
    hits = []
    for cid, score, lex, vec, sim in fused:
        row = rows.get(cid)
        if row is None:  # deleted between the two queries
            continue
        _, kb_id, doc_id, name, ordinal, start, end, body = row
        hits.append(
            Hit(cid, kb_id, doc_id, name, ordinal, start, end, body, score, lex, vec,
                None if sim is None else round(sim, 4))
        )  # fmt: skip
    return hits
