"""Retrieval latency of the default knowledge-base index at 100k chunks.

    python -m bench.rag [--chunks 100000] [--dim 256] [--queries 300] [--db sqlite|mariadb|both]

Fills one knowledge base (attached to one agent) with synthetic chunks straight through the
index code (`documents.add_indexed_document`: SQL rows, the FTS5 / FULLTEXT index, float32
embeddings) — no LLM server involved — then times `HybridIndex.search`: the lexical top-N
(SQLite FTS5 / MariaDB FULLTEXT), the vector top-N (numpy matrix in process memory) and their
reciprocal rank fusion, plus each retriever alone. The query embedding is given (in production
it is one call to the embeddings provider, not counted here). Text: ~60 words per chunk drawn
from a Zipf distribution over a 30k-word vocabulary whose commonest words are English stop
words; vectors: random unit vectors; a query is 4 of a chunk's content words and its vector plus
noise.

Prints one JSON document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np

from chatee.db import create_engine, session_factory
from chatee.ids import new_id
from chatee.migrate import upgrade_async
from chatee.models import AgentKnowledgeBase, KnowledgeBase
from chatee.rag import documents
from chatee.rag.index import (
    STOPWORDS,
    HybridIndex,
    MatrixVectorIndex,
    SearchParams,
    lexical_search,
    query_terms,
)

VOCABULARY = 30_000
WORDS = 60  # per chunk
MARIADB = "mysql+aiomysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def corpus(n: int, dim: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Zipf-distributed words like real text: the commonest ones are English stop words (which
    queries drop, as real ones do), the rest made-up words."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "dr", "on"]
    vocab = sorted(STOPWORDS)
    for i in range(VOCABULARY - len(vocab)):
        word, x = "", i + 1
        while x:
            x, r = divmod(x, len(syllables))
            word += syllables[r]
        vocab.append(word + "x")
    weights = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.1
    ranks = rng.choice(VOCABULARY, size=n * WORDS, p=weights / weights.sum())
    words = [vocab[r] for r in ranks]
    texts = [" ".join(words[i * WORDS : (i + 1) * WORDS]) for i in range(n)]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "samples": len(ordered),
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    engine = create_engine(url)
    factory = session_factory(engine)
    try:
        log(f"{url.split('://')[0]}: generating {args.chunks} chunks")
        texts, vectors = corpus(args.chunks, args.dim, rng)
        kb_id, agent_id = new_id(), new_id()
        async with factory() as db:
            db.add(KnowledgeBase(id=kb_id, owner_id=new_id(), name="bench", description=""))
            db.add(AgentKnowledgeBase(agent_id=agent_id, knowledge_base_id=kb_id))
            await db.commit()
        started = time.perf_counter()
        offset, spans = 0, []
        for body in texts:
            spans.append((body, offset, offset + len(body)))
            offset += len(body) + 2
        await documents.add_indexed_document(factory, kb_id, "bench.txt", spans, vectors)
        insert_s = time.perf_counter() - started
        log(f"  inserted in {insert_s:.1f}s")

        index = HybridIndex(MatrixVectorIndex())
        params = SearchParams(top_k=args.top_k, candidates=50, min_similarity=-1.0)
        picks = rng.integers(0, args.chunks, size=args.queries + 20)
        queries = []
        for i in picks:
            words = query_terms(texts[i])  # its distinct non-stop words
            chosen = [words[j] for j in rng.choice(len(words), size=4, replace=False)]
            noisy = vectors[i] + rng.standard_normal(args.dim).astype(np.float32) * 0.05
            queries.append((int(i), " ".join(chosen), noisy / np.linalg.norm(noisy)))

        async with factory() as db:
            started = time.perf_counter()
            await index.search(db, [kb_id], queries[0][1], queries[0][2], params)
            cold_s = time.perf_counter() - started
        log(f"  first search (loads the vector matrix) {cold_s:.2f}s")

        hybrid, lexical, vector, found = [], [], [], 0
        versions = {kb_id: 0}
        async with factory() as db:
            kb = await db.get(KnowledgeBase, kb_id)
            versions = {kb_id: kb.version}
        for n, (_, text, vec) in enumerate(queries):
            async with factory() as db:
                t0 = time.perf_counter()
                hits = await index.search(db, [kb_id], text, vec, params)
                t1 = time.perf_counter()
                await lexical_search(db, [kb_id], text, params.candidates)
                t2 = time.perf_counter()
                await index.vectors.search(db, versions, vec, params.candidates, -1.0)
                t3 = time.perf_counter()
            if n < 20:  # warm-up
                continue
            hybrid.append(t1 - t0)
            lexical.append(t2 - t1)
            vector.append(t3 - t2)
            found += bool(hits) and hits[0].ordinal == queries[n][0]
        # a new 100-chunk document: the next search appends it to the cached matrix
        extra = [(f"fresh chunk {i} " + texts[i], 0, 0) for i in range(100)]
        fresh = rng.standard_normal((100, args.dim)).astype(np.float32)
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
        await documents.add_indexed_document(factory, kb_id, "fresh.txt", extra, fresh)
        async with factory() as db:
            started = time.perf_counter()
            await index.search(db, [kb_id], queries[0][1], queries[0][2], params)
            after_new_s = time.perf_counter() - started
        vectors_index = index.vectors
        assert isinstance(vectors_index, MatrixVectorIndex)
        return {
            "database": url.split("+")[0],
            "search_after_new_document_ms": round(after_new_s * 1000, 1),
            "matrix_loads": vectors_index.loads,
            "matrix_appends": vectors_index.appends,
            "chunks": args.chunks,
            "dim": args.dim,
            "insert_seconds": round(insert_s, 1),
            "first_search_seconds": round(cold_s, 2),
            "hybrid": percentiles(hybrid),
            "lexical_only": percentiles(lexical),
            "vector_only": percentiles(vector),
            "target_chunk_first": round(found / len(hybrid), 3),
            "target_p95_ms": 100,
            "meets_target": percentiles(hybrid)["p95_ms"] < 100,
        }
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    if args.db in ("sqlite", "both"):
        folder = tempfile.mkdtemp(prefix="chatee-bench-rag-")
        url = f"sqlite+aiosqlite:///{folder}/rag.db"
        await upgrade_async(url)
        results.append(await measure(url, args))
    if args.db in ("mariadb", "both"):
        import aiomysql

        name = f"chatee_bench_{uuid.uuid4().hex[:8]}"
        conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        try:
            url = MARIADB.format(name=name)
            await upgrade_async(url)
            results.append(await measure(url, args))
        finally:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE {name}")
            conn.close()
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--db", choices=["sqlite", "mariadb", "both"], default="sqlite")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
