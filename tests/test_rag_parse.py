"""Reading each supported format and cutting it into chunks whose offsets point back into the
parsed text — no servers needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatee.rag.chunk import chunk_text
from chatee.rag.parse import (
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    UnreadableDocument,
    UnsupportedMediaType,
    media_type_for,
    parse,
)

CORPUS = Path(__file__).parent / "data" / "rag"
FILES = {"lighthouse.md": MARKDOWN, "beekeeping.html": HTML, "volcano.txt": TEXT,
         "chess.md": MARKDOWN, "coffee.pdf": PDF}  # fmt: skip


def make_pdf(lines: list[str]) -> bytes:
    """A minimal one-page PDF (Helvetica) showing `lines`; pypdf extracts them back."""
    body = ["BT /F1 11 Tf 14 TL 56 780 Td"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        body.append(f"({escaped}) Tj T*")
    body.append("ET")
    stream = "\n".join(body).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_media_type_from_declared_type_or_extension() -> None:
    assert media_type_for("notes.bin", "text/markdown; charset=utf-8") == MARKDOWN
    assert media_type_for("page.HTM", "application/octet-stream") == HTML
    assert media_type_for("scan.pdf", None) == PDF
    with pytest.raises(UnsupportedMediaType):
        media_type_for("photo.png", "image/png")


def test_markdown_and_text_are_kept_as_written() -> None:
    raw = (CORPUS / "lighthouse.md").read_bytes()
    assert parse(raw, MARKDOWN) == raw.decode()
    assert "fourteen seismometers" in parse((CORPUS / "volcano.txt").read_bytes(), TEXT)


def test_html_keeps_visible_text_only() -> None:
    text = parse((CORPUS / "beekeeping.html").read_bytes(), HTML)
    assert text.startswith("Beekeeping for beginners")  # the title
    assert "varroa mite is the most serious pest" in text  # a paragraph, whitespace collapsed
    assert "Uncap the comb with a heated knife" in text
    assert "console.log" not in text and "font-family" not in text
    assert "<p>" not in text


def test_pdf_text_is_extracted() -> None:
    text = parse((CORPUS / "coffee.pdf").read_bytes(), PDF)
    assert "First crack arrives after about nine minutes" in text
    assert parse(make_pdf(["a (b) c \\ d"]), PDF).strip() == "a (b) c \\ d"


@pytest.mark.parametrize(
    ("data", "media_type", "why"),
    [
        (b"%PDF-1.4\nthis is not really a pdf", PDF, "cannot be read"),
        (make_pdf([]), PDF, "no extractable text"),
        (b"\xff\xfe\x00h\x00i", TEXT, "binary"),
        (b"caf\xe9", MARKDOWN, "not UTF-8"),
        (b"<html><script>x()</script></html>", HTML, "no text"),
    ],
)
def test_broken_documents_are_refused_with_a_reason(data: bytes, media_type: str, why: str) -> None:
    with pytest.raises(UnreadableDocument, match=why):
        parse(data, media_type)


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize(("size", "overlap"), [(200, 40), (800, 120)])
def test_chunk_offsets_map_back_to_the_text(name: str, size: int, overlap: int) -> None:
    text = parse((CORPUS / name).read_bytes(), FILES[name])
    chunks = chunk_text(text, size, overlap)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and len(chunk.text) <= size
    # together they cover every word, and neighbours overlap (a fact is never cut off)
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    if len(chunks) > 1 and overlap:
        assert any(b.start < a.end for a, b in zip(chunks, chunks[1:], strict=False))


def test_chunks_break_at_paragraphs_and_words() -> None:
    text = ("alpha beta gamma. " * 10).strip() + "\n\n" + ("delta epsilon. " * 10).strip()
    chunks = chunk_text(text, size=200, overlap=30)
    assert chunks[0].text.endswith("gamma.")  # cut at the paragraph break, not mid-sentence
    for chunk in chunks:  # never starts or ends in the middle of a word
        assert chunk.start == 0 or not text[chunk.start - 1].isalnum()
        assert chunk.end == len(text) or not text[chunk.end].isalnum()
