"""Overlapping chunks that remember where they came from: `text[start:end] == chunk.text`."""

from __future__ import annotations

from dataclasses import dataclass

# best first: paragraph, sentence (also at a hard-wrapped line end), line, clause, word
BREAKS = ("\n\n", ".\n", ". ", "?\n", "? ", "!\n", "! ", "\n", "; ", ", ", " ")
SENTENCE_ENDS = (".\n", ". ", "?\n", "? ", "!\n", "! ", "\n\n")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    start: int  # character offsets into the parsed document text
    end: int


def chunk_text(text: str, size: int = 800, overlap: int = 120) -> list[Chunk]:
    """Cut at paragraph, line, sentence or word boundaries near `size` characters; each chunk
    repeats about `overlap` characters of the one before, starting on a word."""
    if size <= 0:
        raise ValueError("size must be positive")
    overlap = max(0, min(overlap, size // 2))
    chunks: list[Chunk] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            end = _break_before(text, start + size // 2, end)
        lo, hi = _trim(text, start, end)
        if lo < hi:
            chunks.append(Chunk(len(chunks), text[lo:hi], lo, hi))
        if end >= n:
            break
        start = _overlap_start(text, max(end - overlap, start + 1), end)
    return chunks


def _break_before(text: str, lo: int, hi: int) -> int:
    """The end of the last good break in text[lo:hi], else hi."""
    for mark in BREAKS:
        at = text.rfind(mark, lo, hi)
        if at != -1:
            return at + len(mark)
    return hi


def _overlap_start(text: str, lo: int, end: int) -> int:
    """Where the next chunk starts: the first sentence that begins in text[lo:end] (so the
    overlap repeats whole sentences), else the first word from `lo`."""
    best = min(
        (at + len(mark) for mark in SENTENCE_ENDS if (at := text.find(mark, lo - 1, end)) != -1),
        default=None,
    )
    if best is not None and best < end:
        return best
    return _word_start(text, lo, end)


def _word_start(text: str, pos: int, limit: int) -> int:
    """`pos`, moved forward to the start of a word (never past `limit`)."""
    if pos == 0 or text[pos - 1].isspace():
        return pos
    for i in range(pos, limit):
        if text[i].isspace():
            return i + 1
    return pos


def _trim(text: str, lo: int, hi: int) -> tuple[int, int]:
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    return lo, hi
