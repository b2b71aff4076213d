"""Knowledge bases: parse → chunk → embed → index, and hybrid retrieval over the index.

One idea per module: `parse` (formats to text), `chunk` (overlapping passages with offsets),
`embed` (OpenAI-compatible embeddings), `index` (lexical + vector search fused by reciprocal
rank), `documents` (the ingestion steps' reads and writes).
"""
