"""Document intake shared by the gateway, the CLI and the embedder: format detection and text extraction.

`extract_text` turns a submitted `Document` into normalized plain text, or raises `DocumentRejected`
with a reason a person can act on ("document is empty", "content is not text: invalid UTF-8 at
byte 17", ...). Rejection is permanent: the same bytes will never extract, so the event is
dead-lettered rather than retried.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup
from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction, Tag
from llmops.ingest.v1.document_pb2 import (
    DOCUMENT_FORMAT_HTML,
    DOCUMENT_FORMAT_MARKDOWN,
    DOCUMENT_FORMAT_PDF,
    DOCUMENT_FORMAT_PLAIN_TEXT,
    DOCUMENT_FORMAT_UNSPECIFIED,
    Document,
)

from shared.errors import PermanentError

DEFAULT_MAX_BYTES = 10 * 1024 * 1024

FORMAT_NAMES: dict[int, str] = {
    DOCUMENT_FORMAT_UNSPECIFIED: "unspecified",
    DOCUMENT_FORMAT_PLAIN_TEXT: "plain text",
    DOCUMENT_FORMAT_MARKDOWN: "Markdown",
    DOCUMENT_FORMAT_HTML: "HTML",
    DOCUMENT_FORMAT_PDF: "PDF",
}
_SUPPORTED = "plain text, Markdown, HTML or PDF"

_SUFFIX_FORMATS: dict[str, int] = {
    ".txt": DOCUMENT_FORMAT_PLAIN_TEXT,
    ".text": DOCUMENT_FORMAT_PLAIN_TEXT,
    ".md": DOCUMENT_FORMAT_MARKDOWN,
    ".markdown": DOCUMENT_FORMAT_MARKDOWN,
    ".html": DOCUMENT_FORMAT_HTML,
    ".htm": DOCUMENT_FORMAT_HTML,
    ".pdf": DOCUMENT_FORMAT_PDF,
}

# Magic numbers of binary formats people send by mistake, so the rejection names what was sent.
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (DOCX, XLSX, PPTX, ODT and EPUB files are ZIP archives)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Microsoft Office file (DOC, XLS or PPT)"),
    (b"{\\rtf", "an RTF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable (ELF)"),
)


class DocumentRejected(PermanentError):
    """The document can never be ingested as submitted; the message says why and what to change."""


def content_sha256(content: bytes) -> str:
    """SHA-256 of the raw content, lowercase hex (the `Document.content_sha256` field)."""
    return hashlib.sha256(content).hexdigest()


def detect_format(source_uri: str, declared: int, content: bytes = b"") -> int:
    """The document's format: `declared` unless UNSPECIFIED, else by the URI's suffix, else by sniffing
    `content` (``%PDF-`` → PDF, ``<html``/``<!doctype html`` → HTML), else plain text.

    A declared value outside the DocumentFormat enum raises DocumentRejected.
    """
    if declared != DOCUMENT_FORMAT_UNSPECIFIED:
        if declared not in FORMAT_NAMES:
            raise DocumentRejected(
                f"unsupported format: declared format {declared} is not a known DocumentFormat "
                f"(send {_SUPPORTED})"
            )
        return declared
    by_suffix = _SUFFIX_FORMATS.get(_suffix(source_uri))
    if by_suffix is not None:
        return by_suffix
    head = content[:1024].lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if head.startswith(b"%pdf-"):
        return DOCUMENT_FORMAT_PDF
    if head.startswith((b"<html", b"<!doctype html")):
        return DOCUMENT_FORMAT_HTML
    return DOCUMENT_FORMAT_PLAIN_TEXT


def extract_text(document: Document, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Plain text of `document`, whitespace normalized with paragraph breaks kept as blank lines.

    Raises DocumentRejected when the content is empty, larger than `max_bytes`, not UTF-8 text
    (for the text formats), of an unsupported format, or a PDF that is encrypted or has no text.
    """
    content = document.content
    if not content:
        raise DocumentRejected("document is empty: the content has 0 bytes")
    if len(content) > max_bytes:
        size, limit = _human_size(len(content)), _human_size(max_bytes)
        if size == limit:  # e.g. 10.0 MB vs 10 MB: show the exact counts instead
            size, limit = f"{len(content):,} bytes", f"{max_bytes:,}-byte"
        raise DocumentRejected(f"document is {size}, over the {limit} limit")
    fmt = detect_format(document.source_uri, document.format, content)
    if fmt == DOCUMENT_FORMAT_PDF:
        text = _pdf_text(content)
        if not text:
            raise DocumentRejected(
                "PDF has no extractable text (scanned pages or images only? run OCR first)"
            )
        return text
    _reject_binary(content, fmt)
    raw = _decode(content)
    if fmt == DOCUMENT_FORMAT_HTML:
        text = normalize_whitespace(_html_text(raw))
        what = "HTML has no visible text"
    elif fmt == DOCUMENT_FORMAT_MARKDOWN:
        text = normalize_whitespace(_markdown_text(raw))
        what = "Markdown has no text"
    else:
        text = normalize_whitespace(raw)
        what = "document has no text"
    if not text:
        only_whitespace = not normalize_whitespace(raw)
        raise DocumentRejected("document is empty: only whitespace" if only_whitespace else what)
    return text


# --- helpers -------------------------------------------------------------------------------------


def _suffix(source_uri: str) -> str:
    """Lowercase suffix of the URI's path ('' when none); query strings and fragments are ignored."""
    path = source_uri
    if "://" in source_uri or source_uri.startswith("file:"):
        path = unquote(urlsplit(source_uri).path)
    return PurePosixPath(path.replace("\\", "/")).suffix.lower()


def _human_size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            value = round(n / scale, 1)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _reject_binary(content: bytes, fmt: int) -> None:
    declared = FORMAT_NAMES.get(fmt, str(fmt))
    head = content[:16]
    if content[:1024].lstrip(b"\xef\xbb\xbf \t\r\n\f").startswith(b"%PDF-"):
        raise DocumentRejected(
            f"unsupported format: the content is a PDF but the format says {declared}; "
            "declare DOCUMENT_FORMAT_PDF (or leave the format unspecified)"
        )
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            raise DocumentRejected(f"unsupported format: the content is {kind}; send {_SUPPORTED}")


def _decode(content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if content.startswith(b"\xef\xbb\xbf") else 0)
        raise DocumentRejected(
            f"content is not text: invalid UTF-8 at byte {offset} (binary file, or another "
            "encoding such as Latin-1? convert it to UTF-8)"
        ) from exc
    nul = text.find("\x00")
    if nul >= 0:
        byte = len(text[:nul].encode("utf-8")) + (3 if content.startswith(b"\xef\xbb\xbf") else 0)
        raise DocumentRejected(
            f"content is not text: NUL byte at byte {byte} (binary file, or UTF-16? convert it to UTF-8)"
        )
    return text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b\ufeff]")
_CONTROL_ALL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace except newlines (includes NBSP, tabs, \f)
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """NFC, Unix newlines, runs of spaces collapsed, lines trimmed, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# --- HTML -----------------------------------------------------------------------------------------

_HTML_DROP = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object", "button"}
)
_HTML_LINE = frozenset({"br", "li", "tr", "dt", "dd", "option", "caption", "figcaption"})
_HTML_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "details", "dialog", "div", "dl", "fieldset",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "html", "main",
        "nav", "ol", "p", "pre", "section", "summary", "table", "ul",
    }
)  # fmt: skip
_HTML_CELL = frozenset({"td", "th"})
_HTML_SKIP_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
_LINE, _PARAGRAPH = "\x01", "\x02"  # break markers; never in the text (control characters)
_HTML_BREAKS = re.compile(r"[^\S\n]*[\x01\x02][\x01\x02\s]*")


def _html_text(markup: str) -> str:
    """Visible text of an HTML page: scripts, styles and the head dropped; blocks become paragraphs."""
    soup = BeautifulSoup(markup, "html.parser")
    parts: list[str] = []
    _html_walk(soup, parts, pre=False)
    # Merge the break markers around each element: a paragraph break wins over a line break.
    return _HTML_BREAKS.sub(lambda m: "\n\n" if _PARAGRAPH in m.group(0) else "\n", "".join(parts))


def _html_walk(node: Tag, parts: list[str], *, pre: bool) -> None:
    for child in node.children:
        if isinstance(child, NavigableString):
            if isinstance(child, _HTML_SKIP_STRINGS):
                continue
            # HTML collapses whitespace (source line breaks are spaces), except inside <pre>.
            text = _CONTROL_ALL.sub("", str(child))
            parts.append(text if pre else re.sub(r"\s+", " ", text))
        elif isinstance(child, Tag):
            name = child.name.lower()
            if name in _HTML_DROP or child.has_attr("hidden"):
                continue
            if name == "br":
                parts.append("\n")
                continue
            sep = _PARAGRAPH if name in _HTML_BLOCK else _LINE if name in _HTML_LINE else ""
            parts.append(sep)
            _html_walk(child, parts, pre=pre or name == "pre")
            parts.append(" " if name in _HTML_CELL else sep)


# --- Markdown -------------------------------------------------------------------------------------

_MD_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_MD_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_MD_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_MD_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S+.*$")
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_MD_QUOTE = re.compile(r"^\s{0,3}(>\s?)+")
_MD_BULLET = re.compile(r"^(\s*)[*+-]\s+(\[[ xX]\]\s+)?")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)|!\[([^\]]*)\]\[[^\]]*\]")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
_MD_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_MD_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_MD_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_MD_EMPHASIS = (
    re.compile(r"(\*\*\*|___)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(~~)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(\*)(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<![\w])(_)(?=\S)(.+?)(?<=\S)_(?![\w])"),  # not snake_case words
)
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~<])")


def _markdown_text(source: str) -> str:
    """Readable text of a Markdown document: headings as their own lines, link and image syntax reduced
    to their text, emphasis markers and fences dropped, code kept verbatim."""
    out: list[str] = []
    fence: str | None = None
    for line in source.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        fence_match = _MD_FENCE.match(line)
        if fence is not None:
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                fence = None
                out.append("")
            else:
                out.append(line)
            continue
        if fence_match:
            fence = fence_match.group(1)
            out.append("")
            continue
        if _MD_REF_DEF.match(line) or (_MD_TABLE_RULE.match(line) and "|" in line):
            continue
        if _MD_RULE.match(line) or (_MD_SETEXT.match(line) and out and out[-1].strip()):
            out.append("")  # a rule, or a setext heading's underline: the heading stays a line
            continue
        heading = _MD_HEADING.match(line)
        if heading:
            out.extend(["", _md_inline(heading.group(1)), ""])
            continue
        out.append(_md_inline(_MD_BULLET.sub(r"\1- ", _MD_QUOTE.sub("", line))))
    return "\n".join(out)


def _md_inline(text: str) -> str:
    # Code spans first, protected from the other rules by placeholders.
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(2).strip())
        return f"\x00{len(spans) - 1}\x00"

    text = _MD_CODE_SPAN.sub(keep, text)
    text = _MD_IMAGE.sub(lambda m: m.group(1) or m.group(2) or "", text)
    text = _MD_LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _MD_AUTOLINK.sub(r"\1", text)
    text = _MD_HTML_TAG.sub("", text)
    for pattern in _MD_EMPHASIS:
        previous = None
        while previous != text:
            previous, text = text, pattern.sub(r"\2", text)
    text = _MD_ESCAPE.sub(r"\1", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)


# --- PDF --------------------------------------------------------------------------------------------


def _pdf_text(content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise DocumentRejected("PDF is encrypted (password protected); submit an unencrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DocumentRejected(
            f"PDF cannot be read ({type(exc).__name__}: {exc}); is the file damaged?"
        ) from exc
    return normalize_whitespace("\n\n".join(pages))
