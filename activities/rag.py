"""Context steps on the `chatee-rag` queue: retrieval over the agent's knowledge bases and the
session's own earlier messages (`AG_RAG`), and memory (`AG_MEMORY_LOAD` / `AG_MEMORY_STORE`).
What they find is stored as a system note of the turn, which the next generation step reads."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from sqlalchemy import select, update
from temporalio import activity

from activities.llm import llm_client, load_agent, usage_of
from activities.steps import announce, complete, heartbeating
from chatee import memory, session_store
from chatee.models import Message
from chatee.rag import documents
from chatee.services import Services
from workflows import names
from workflows.types import StepInput, StepResult

WORD = re.compile(r"\w+", re.UNICODE)
SCAN_LIMIT = 5000
EXTRACT_PROMPT = (
    "From the conversation, extract durable facts worth remembering about the user "
    "(name, preferences, goals). Answer only with a JSON object mapping short snake_case keys "
    "to short string values; answer {} if there is nothing new."
)


class RagActivities:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.retriever = services.retriever

    @activity.defn(name=names.RETRIEVE)
    async def retrieve(self, inp: StepInput) -> StepResult:
        """Hybrid search over the agent's knowledge bases, and BM25 over the session's messages
        of earlier turns (including those that no longer fit the model's context)."""
        await announce(self.services.bus, inp)
        session_id, turn_id = int(inp.session_id), int(inp.turn_id)
        top_k = int(inp.params.get("top_k", self.services.settings.rag.top_k))
        async with self.services.sessionmaker() as db:
            recent = await session_store.turn_context(db, session_id, turn_id, 5)
            query = inp.params.get("query") or next(
                (m.content for m in reversed(recent) if m.role == "user"), ""
            )
            kb_ids = await documents.agent_knowledge_bases(db, int(inp.agent_id))
            passages = []
            if kb_ids and query:
                async with heartbeating():
                    passages = await self.retriever.search(
                        db, kb_ids, query, top_k, lexical_fallback=True
                    )
            stmt = (
                select(Message)
                .where(
                    Message.session_id == session_id,
                    Message.turn_id < turn_id,
                    Message.role.in_(("user", "assistant")),
                )
                .order_by(Message.id.desc())
                .limit(SCAN_LIMIT)
            )
            older = list((await db.execute(stmt)).scalars())
        hits = bm25(query, [(m.id, m.content) for m in older], top_k)
        kb_citations = [p.citation() for p in passages]
        message_citations = [
            {"message_id": str(mid), "score": round(score, 3)} for mid, score in hits
        ]
        citations = kb_citations + message_citations
        if not citations:
            await complete(self.services.bus, inp, "nothing relevant found", citations=[])
            return StepResult("nothing relevant found")
        if passages:
            blocks = [
                f"[{n}] {p.document_name} (characters {p.start}-{p.end}):\n{p.text}"
                for n, p in enumerate(passages, start=1)
            ]
            note = "Relevant passages from the knowledge base:\n\n" + "\n\n".join(blocks)
            await self._note(inp, note, kb_citations, "kb-note")
        if hits:
            by_id = {m.id: m for m in older}
            lines = [
                f"- ({by_id[mid].created_at:%Y-%m-%d} {by_id[mid].role}) {by_id[mid].content[:500]}"
                for mid, _ in hits
            ]
            note = "Relevant earlier messages from this conversation:\n" + "\n".join(lines)
            await self._note(inp, note, message_citations)
        found = []
        if passages:
            found.append(f"{len(passages)} knowledge base passages")
        if hits:
            found.append(f"{len(hits)} earlier messages")
        summary = " and ".join(found) + " retrieved"
        await complete(self.services.bus, inp, summary, citations=citations)
        return StepResult(summary, citations=citations)

    @activity.defn(name=names.LOAD_MEMORY)
    async def load_memory(self, inp: StepInput) -> StepResult:
        await announce(self.services.bus, inp)
        async with self.services.sessionmaker() as db:
            rows = await memory.entries(
                db, int(inp.agent_id), int(inp.user_id), inp.params.get("scope", "all")
            )
        if not rows:
            await complete(self.services.bus, inp, "no memories")
            return StepResult("no memories")
        lines = [
            f"- {r.key}: {r.value}" + (" (about this user)" if r.user_id else "") for r in rows
        ]
        await self._note(inp, "What you remember:\n" + "\n".join(lines))
        summary = f"{len(rows)} memories loaded"
        await complete(self.services.bus, inp, summary)
        return StepResult(summary)

    @activity.defn(name=names.STORE_MEMORY)
    async def store_memory(self, inp: StepInput) -> StepResult:
        """Store the step's key/value, or let the model extract facts from this turn."""
        await announce(self.services.bus, inp)
        agent_id, user_id = int(inp.agent_id), int(inp.user_id)
        owner = memory.AGENT_WIDE if inp.params.get("scope") == "agent" else user_id
        usage: dict[str, int] = {}
        if "key" in inp.params:
            facts = {inp.params["key"]: inp.params["value"]}
        else:
            async with heartbeating():
                facts, usage = await self._extract(inp)
        for key, value in facts.items():
            await memory.put(self.services.sessionmaker, agent_id, owner, str(key), str(value))
        summary = f"{len(facts)} memories stored" + (f": {', '.join(facts)}" if facts else "")
        await complete(self.services.bus, inp, summary)
        return StepResult(summary, usage=usage)

    async def _extract(self, inp: StepInput) -> tuple[dict[str, str], dict[str, int]]:
        async with self.services.sessionmaker() as db:
            agent = await load_agent(db, inp.agent_id)
            history = await session_store.turn_context(
                db, int(inp.session_id), int(inp.turn_id), 20
            )
        client = llm_client(self.services, agent.provider)
        transcript = "\n".join(
            f"{m.role}: {m.content}" for m in history if m.role in ("user", "assistant")
        )
        response = await client.chat.completions.create(
            model=agent.model,
            messages=[
                {"role": "system", "content": EXTRACT_PROMPT},
                {"role": "user", "content": transcript},
            ],
            response_format={"type": "json_object"},
        )
        text = response.choices[0].message.content or "{}"
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {}
        facts = {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
        return dict(list(facts.items())[:20]), usage_of(response.usage) or {}

    async def _note(
        self,
        inp: StepInput,
        text: str,
        citations: list[dict[str, Any]] | None = None,
        kind: str = "note",
    ) -> None:
        """A system message of the turn for the next generation step; a retrieval note keeps
        its citations, which the turn's reply is returned with."""
        note = await session_store.store_message_once(
            self.services.sessionmaker,
            idempotency_key=f"{inp.turn_id}:{inp.step}:{kind}",
            session_id=int(inp.session_id),
            role="system",
            content=text,
            turn_id=int(inp.turn_id),
        )
        if citations and note.citations != citations:
            async with self.services.sessionmaker() as db:
                await db.execute(
                    update(Message).where(Message.id == note.id).values(citations=citations)
                )
                await db.commit()


def tokens(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def bm25(
    query: str, documents: list[tuple[int, str]], top_k: int, k1: float = 1.2, b: float = 0.75
) -> list[tuple[int, float]]:
    """Okapi BM25: the `top_k` best (id, score) pairs with a score above zero."""
    terms = set(tokens(query))
    if not terms or not documents:
        return []
    docs = [(doc_id, Counter(tokens(text))) for doc_id, text in documents]
    avg = sum(sum(c.values()) for _, c in docs) / len(docs) or 1
    df = Counter(t for _, c in docs for t in terms if t in c)
    n = len(docs)
    scored = []
    for doc_id, counts in docs:
        length = sum(counts.values())
        score = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if tf:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
        if score > 0:
            scored.append((doc_id, score))
    scored.sort(key=lambda pair: (-pair[1], -pair[0]))
    return scored[:top_k]
