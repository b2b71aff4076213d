"""Documents to plain text: text, Markdown (kept as written, so offsets point into the file),
HTML (visible text, via the standard library's `html.parser`) and PDF (via `pypdf`)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import PurePath

TEXT, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
SUPPORTED = (TEXT, MARKDOWN, HTML, PDF)
EXTENSIONS = {
    ".txt": TEXT, ".text": TEXT, ".md": MARKDOWN, ".markdown": MARKDOWN,
    ".html": HTML, ".htm": HTML, ".pdf": PDF,
}  # fmt: skip
ALIASES = {"text/x-markdown": MARKDOWN, "application/xhtml+xml": HTML, "application/x-pdf": PDF}


class UnsupportedMediaType(ValueError):
    """The upload is in a format we cannot read."""


class UnreadableDocument(ValueError):
    """The upload claims a format we read, but its content is broken or holds no text."""


def media_type_for(filename: str, declared: str | None) -> str:
    """The declared content type when we know it, else the file extension's."""
    declared = (declared or "").split(";")[0].strip().lower()
    declared = ALIASES.get(declared, declared)
    if declared in SUPPORTED:
        return declared
    by_name = EXTENSIONS.get(PurePath(filename).suffix.lower())
    if by_name:
        return by_name
    raise UnsupportedMediaType(
        f"unsupported document type {declared or filename!r}; "
        "upload plain text, Markdown, HTML or PDF"
    )


def parse(data: bytes, media_type: str) -> str:
    """The document's text. Raises UnreadableDocument for broken or empty content."""
    if media_type == PDF:
        text = _pdf(data)
    else:
        if b"\x00" in data:
            raise UnreadableDocument("the file is binary, not text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UnreadableDocument("the file is not UTF-8 text") from None
        if media_type == HTML:
            text = html_text(text)
    if not text.strip():
        raise UnreadableDocument("the document has no text")
    return text


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"the PDF cannot be read: {exc}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise UnreadableDocument("the PDF has no extractable text (a scan needs OCR first)")
    return text


BLOCKS = {
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt", "hr",
    "title", "main", "nav", "aside", "figcaption",
}  # fmt: skip
HIDDEN = {"script", "style", "noscript", "template", "svg", "head"}
SPACES = re.compile(r"[ \t\r\f\v]+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in HIDDEN:
            self.hidden += 1
        if tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in HIDDEN and self.hidden:
            self.hidden -= 1
        if tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title or not self.hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """Visible text (and the title), one line per block element."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    lines = (SPACES.sub(" ", line).strip() for line in "".join(extractor.parts).split("\n"))
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
