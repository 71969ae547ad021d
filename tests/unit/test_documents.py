"""Document intake: format detection, text extraction per format, and every rejection with its reason."""

from __future__ import annotations

import hashlib
import io

import pytest
from llmops.ingest.v1.document_pb2 import (
    DOCUMENT_FORMAT_HTML,
    DOCUMENT_FORMAT_MARKDOWN,
    DOCUMENT_FORMAT_PDF,
    DOCUMENT_FORMAT_PLAIN_TEXT,
    DOCUMENT_FORMAT_UNSPECIFIED,
    Document,
)
from pypdf import PdfReader, PdfWriter

from shared.documents import DocumentRejected, content_sha256, detect_format, extract_text
from shared.errors import PermanentError


def minimal_pdf(*lines: str) -> bytes:
    """A valid one-page PDF written by hand (correct xref offsets), one text line per argument."""
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops += [f"({escaped}) Tj", "T*"]
    stream = "\n".join([*ops, "ET"]).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def doc(content: bytes, fmt: int = DOCUMENT_FORMAT_UNSPECIFIED, source_uri: str = "") -> Document:
    document = Document(document_id="d1", source_uri=source_uri, content=content)
    document.format = fmt  # type: ignore[assignment]  # any int, unknown values included
    return document


def rejection(document: Document, **kwargs: int) -> str:
    with pytest.raises(DocumentRejected) as info:
        extract_text(document, **kwargs)
    return str(info.value)


# --- sha256 and format detection -------------------------------------------------------------------


def test_content_sha256_is_hex_sha256() -> None:
    assert content_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert content_sha256(b"hello") == hashlib.sha256(b"hello").hexdigest()


def test_rejection_is_permanent() -> None:
    assert issubclass(DocumentRejected, PermanentError)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("notes.txt", DOCUMENT_FORMAT_PLAIN_TEXT),
        ("/srv/docs/NOTES.TEXT", DOCUMENT_FORMAT_PLAIN_TEXT),
        ("README.md", DOCUMENT_FORMAT_MARKDOWN),
        ("guide.markdown", DOCUMENT_FORMAT_MARKDOWN),
        ("https://example.com/page.html?session=1#top", DOCUMENT_FORMAT_HTML),
        ("file:///tmp/index.htm", DOCUMENT_FORMAT_HTML),
        ("s3://bucket/report.PDF", DOCUMENT_FORMAT_PDF),
        (r"C:\docs\manual.pdf", DOCUMENT_FORMAT_PDF),
    ],
)
def test_detect_format_by_suffix(uri: str, expected: int) -> None:
    assert detect_format(uri, DOCUMENT_FORMAT_UNSPECIFIED) == expected


def test_declared_format_wins_over_suffix_and_content() -> None:
    assert detect_format("a.pdf", DOCUMENT_FORMAT_MARKDOWN, b"%PDF-1.4") == DOCUMENT_FORMAT_MARKDOWN


def test_detect_format_sniffs_content_without_suffix() -> None:
    unspecified = DOCUMENT_FORMAT_UNSPECIFIED
    assert detect_format("upload", unspecified, b"%PDF-1.7\n...") == DOCUMENT_FORMAT_PDF
    assert detect_format("", unspecified, b"\xef\xbb\xbf  <!DOCTYPE html><html>") == DOCUMENT_FORMAT_HTML
    assert detect_format("https://x.io/page", unspecified, b"\n<HTML><body>") == DOCUMENT_FORMAT_HTML
    assert detect_format("data.bin", unspecified, b"just words") == DOCUMENT_FORMAT_PLAIN_TEXT
    assert detect_format("", unspecified) == DOCUMENT_FORMAT_PLAIN_TEXT


def test_unknown_declared_format_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match=r"^unsupported format: declared format 42"):
        detect_format("a.txt", 42)


# --- extraction per format -------------------------------------------------------------------------


def test_plain_text_normalizes_whitespace_and_keeps_paragraphs() -> None:
    content = "\ufeffFirst  line\twith   spaces \r\nsecond line\r\n\r\n\r\n\r\n  Next\u00a0paragraph. \n"
    content_bytes = content.encode()
    text = extract_text(doc(content_bytes, source_uri="a.txt"))
    assert text == "First line with spaces\nsecond line\n\nNext paragraph."


def test_plain_text_keeps_unicode() -> None:
    text = extract_text(doc("Café — naïve 日本語 ✓".encode(), DOCUMENT_FORMAT_PLAIN_TEXT))
    assert text == "Café — naïve 日本語 ✓"


def test_html_gives_visible_text_with_paragraphs() -> None:
    html = b"""<!DOCTYPE html>
    <html><head><title>Tab title</title><style>p { color: red }</style>
    <script>var hidden = "script text";</script></head>
    <body>
      <h1>Kafka   guide</h1>
      <p>Partitions split
         a topic.<!-- a comment --> They are <b>ordered</b>.</p>
      <script>console.log("also hidden")</script>
      <ul><li>one</li><li>two</li></ul>
      <p>Line<br>break &amp; entity</p>
      <noscript>enable JS</noscript>
    </body></html>"""
    text = extract_text(doc(html, source_uri="https://example.com/guide.html"))
    assert text == (
        "Kafka guide\n\nPartitions split a topic. They are ordered.\n\none\ntwo\n\nLine\nbreak & entity"
    )


def test_markdown_reads_as_text() -> None:
    markdown = b"""# Retrieval guide

Use **bold** claims, *care* and _caution_; keep snake_case_names.
See [the docs](https://example.com/docs) and ![a diagram](img/arch.png).

## Steps ##

* first `step_one()`
1. second
> quoted ~~old~~ text

```python
def handler(event):
    return event
```

Setext heading
--------------
[docs]: https://example.com
"""
    text = extract_text(doc(markdown, source_uri="guide.md"))
    assert text == (
        "Retrieval guide\n\n"
        "Use bold claims, care and caution; keep snake_case_names.\n"
        "See the docs and a diagram.\n\n"
        "Steps\n\n"
        "- first step_one()\n"
        "1. second\n"
        "quoted old text\n\n"
        "def handler(event):\n"
        "return event\n\n"
        "Setext heading"
    )
    assert "**" not in text and "](" not in text and "#" not in text


def test_pdf_text_is_extracted() -> None:
    content = minimal_pdf("Kafka keeps partitions ordered.", "Second line (with parens).")
    assert PdfReader(io.BytesIO(content)).pages[0].extract_text()  # a real, readable PDF
    text = extract_text(doc(content, source_uri="report.pdf"))
    assert text == "Kafka keeps partitions ordered.\nSecond line (with parens)."


def test_pdf_is_sniffed_without_suffix_or_declared_format() -> None:
    assert extract_text(doc(minimal_pdf("Sniffed"), source_uri="upload-123")) == "Sniffed"


# --- rejections --------------------------------------------------------------------------------------


def test_empty_document_is_rejected() -> None:
    assert rejection(doc(b"")) == "document is empty: the content has 0 bytes"


def test_whitespace_only_document_is_rejected() -> None:
    assert rejection(doc(b" \n\t\r\n  \n")) == "document is empty: only whitespace"


def test_html_without_visible_text_is_rejected() -> None:
    html = b"<html><head><title>t</title></head><body><script>x()</script></body></html>"
    assert rejection(doc(html, DOCUMENT_FORMAT_HTML)) == "HTML has no visible text"


def test_oversized_document_is_rejected_with_sizes() -> None:
    big = b"a" * (12 * 1024 * 1024 + 300 * 1024)
    assert rejection(doc(big)) == "document is 12.3 MB, over the 10 MB limit"
    assert rejection(doc(b"x" * 150), max_bytes=100) == "document is 150 bytes, over the 100 bytes limit"
    message = rejection(doc(b"x" * (1024 * 1024 + 1)), max_bytes=1024 * 1024)
    assert message == "document is 1,048,577 bytes, over the 1,048,576-byte limit"


def test_document_at_the_limit_is_accepted() -> None:
    assert extract_text(doc(b"x" * 100), max_bytes=100) == "x" * 100


def test_invalid_utf8_is_rejected_with_byte_offset() -> None:
    content = b"valid prefix 1234" + b"\xff\xfe rest"
    message = rejection(doc(content, DOCUMENT_FORMAT_PLAIN_TEXT))
    assert message.startswith("content is not text: invalid UTF-8 at byte 17")


def test_latin1_text_is_rejected_as_not_utf8() -> None:
    message = rejection(doc("café".encode("latin-1"), source_uri="notes.txt"))
    assert message.startswith("content is not text: invalid UTF-8 at byte 3")


def test_nul_bytes_are_rejected() -> None:
    message = rejection(doc(b"abc\x00\x01\x02binary", DOCUMENT_FORMAT_PLAIN_TEXT))
    assert message.startswith("content is not text: NUL byte at byte 3")
    assert rejection(doc("hi".encode("utf-16-le"))).startswith("content is not text: NUL byte at byte 1")


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00rest-of-docx", "a ZIP archive"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "a legacy Microsoft Office file"),
    ],
)
def test_binary_formats_are_rejected_as_unsupported(content: bytes, kind: str) -> None:
    message = rejection(doc(content, source_uri="upload.docx"))
    assert message.startswith(f"unsupported format: the content is {kind}")


def test_pdf_declared_as_text_is_rejected() -> None:
    message = rejection(doc(minimal_pdf("x"), DOCUMENT_FORMAT_PLAIN_TEXT))
    assert message.startswith("unsupported format: the content is a PDF but the format says plain text")


def test_unknown_declared_format_is_rejected_by_extract() -> None:
    assert rejection(doc(b"text", 7)).startswith("unsupported format: declared format 7")


def test_pdf_without_text_is_rejected() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    assert rejection(doc(out.getvalue(), DOCUMENT_FORMAT_PDF)).startswith("PDF has no extractable text")


def test_encrypted_pdf_is_rejected() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(minimal_pdf("secret text"))))
    writer.encrypt(user_password="secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    assert rejection(doc(out.getvalue(), source_uri="locked.pdf")).startswith("PDF is encrypted")


def test_damaged_pdf_is_rejected() -> None:
    message = rejection(doc(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", source_uri="broken.pdf"))
    assert message.startswith("PDF cannot be read")
