"""Prompts of the generator: versioned templates, context packing under a token budget, citations.

Templates are TOML files (``templates/<id>/<version>.toml``) written for base, completion-style
models: plain text with ``{context}`` and ``{question}`` placeholders, ending where the model should
start writing. The context is one ``[n] passage text`` line per passage; answers cite passages by
those markers; :func:`citations_for` maps them back to source chunks, or attributes an answer
written without markers to passages by word overlap.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.query.v1.query_pb2 import Citation, RetrievedChunk

from shared.errors import PermanentError
from shared.text import content_words, sentences, support

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
"""Where the templates shipped with the generator live."""

DEFAULT_MAX_TOKENS = 256
"""Completion budget of a template that does not set ``max_tokens``."""

ELLIPSIS = "…"

_PLACEHOLDER = re.compile(r"\{(context|question)\}")
_MARKER = re.compile(r"\[(\d+)\]")
_DIGITS = re.compile(r"(\d+)")
_KNOWN_FIELDS = frozenset({"id", "version", "description", "template", "stop", "max_tokens"})


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: str
    template: str
    stop: tuple[str, ...]
    max_tokens: int
    description: str = ""

    def render(self, context: str, question: str) -> str:
        """The prompt; placeholders are filled in one pass, so braces in the values are kept as is."""
        values = {"context": context, "question": question}
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.template)


def version_key(version: str) -> tuple[str | int, ...]:
    """Natural sort key: digit runs compare as numbers, so "v10" sorts after "v2"."""
    parts = _DIGITS.split(version)
    # re.split with a capturing group alternates text (even indices) and digits (odd indices).
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


class TemplateRegistry:
    """Every ``*.toml`` template under a directory (recursively), validated at load."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else TEMPLATES_DIR
        if not self.directory.is_dir():
            raise ValueError(f"prompt template directory {self.directory} does not exist")
        self._templates: dict[str, dict[str, PromptTemplate]] = {}
        sources: dict[tuple[str, str], Path] = {}
        for path in sorted(self.directory.rglob("*.toml")):
            template = load_template(path)
            key = (template.id, template.version)
            if key in sources:
                raise ValueError(
                    f"{path}: prompt template {template.id!r} version {template.version!r} "
                    f"is already defined in {sources[key]}"
                )
            sources[key] = path
            self._templates.setdefault(template.id, {})[template.version] = template

    def ids(self) -> list[str]:
        return sorted(self._templates)

    def versions(self, template_id: str) -> list[str]:
        """The template's versions, oldest first (natural order)."""
        return sorted(self._versions_of(template_id), key=version_key)

    def get(self, template_id: str, version: str | None = None) -> PromptTemplate:
        """The template at ``version``; None or "" means its highest version."""
        versions = self._versions_of(template_id)
        if not version:
            return versions[max(versions, key=version_key)]
        try:
            return versions[version]
        except KeyError:
            known = ", ".join(self.versions(template_id))
            raise PermanentError(
                f"prompt template {template_id!r} has no version {version!r} (known versions: {known})"
            ) from None

    def _versions_of(self, template_id: str) -> dict[str, PromptTemplate]:
        try:
            return self._templates[template_id]
        except KeyError:
            known = ", ".join(self.ids()) or "none"
            raise PermanentError(
                f"unknown prompt template {template_id!r} (known templates: {known})"
            ) from None


def load_template(path: Path) -> PromptTemplate:
    """One template file; ValueError naming the file when it is not a valid template."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return _template_from(data)
    except ValueError as exc:
        raise ValueError(f"{path}: invalid prompt template: {exc}") from exc


def _template_from(data: dict[str, Any]) -> PromptTemplate:
    unknown = sorted(set(data) - _KNOWN_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {unknown}")
    template_id = _required_str(data, "id")
    version = _required_str(data, "version")
    template = _required_str(data, "template")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError("'description' must be a string")
    for placeholder in ("{context}", "{question}"):
        if placeholder not in template:
            raise ValueError(f"'template' lacks the {placeholder} placeholder")
    stop = data.get("stop")
    if not isinstance(stop, list) or not stop:
        raise ValueError("'stop' must be a non-empty list of strings")
    if not all(isinstance(s, str) and s for s in stop):
        raise ValueError("'stop' entries must be non-empty strings")
    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError("'max_tokens' must be a positive integer")
    return PromptTemplate(
        id=template_id,
        version=version,
        template=template,
        stop=tuple(stop),
        max_tokens=max_tokens,
        description=description,
    )


def _required_str(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name!r} must be a non-empty string")
    return value


def approx_token_count(text: str) -> int:
    """Tokenizer-free estimate: about 4 tokens per 3 words, rounded up."""
    return math.ceil(len(text.split()) * 4 / 3)


def pack_context(
    chunks: Sequence[RetrievedChunk],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int] = approx_token_count,
) -> tuple[str, list[Citation]]:
    """Numbered passages that fit ``budget_tokens``, and a citation per passage.

    Passages keep the given (relevance) order and are numbered 1, 2, ... as they are included.
    Each costs ``count_tokens(line + "\\n")``; one that does not fit what is left of the budget is
    skipped, except while nothing is included yet: then it is cut on a word boundary, ending in "…",
    to fit. Whitespace inside a passage (newlines included) collapses to single spaces; a repeated
    chunk_id and an empty passage are left out.
    """
    lines: list[str] = []
    citations: list[Citation] = []
    seen: set[str] = set()
    used = 0
    for chunk in chunks:
        if chunk.chunk_id in seen:
            continue
        text = " ".join(chunk.text.split())
        if not text:
            continue
        marker = len(lines) + 1
        line = f"[{marker}] {text}"
        cost = count_tokens(line + "\n")
        if used + cost > budget_tokens:
            if lines:
                continue
            cut = _truncated_line(marker, text, budget_tokens - used, count_tokens)
            if cut is None:
                continue
            line, cost = cut
        seen.add(chunk.chunk_id)
        lines.append(line)
        used += cost
        citations.append(
            Citation(
                marker=marker,
                chunk_id=chunk.chunk_id,
                document_id=chunk.document_id,
                source_uri=chunk.source_uri,
            )
        )
    return "\n".join(lines), citations


def _truncated_line(
    marker: int, text: str, budget: int, count_tokens: Callable[[str], int]
) -> tuple[str, int] | None:
    """The longest word prefix of ``text`` whose line (with "…") fits ``budget``, and its cost."""

    def line(words: int) -> str:
        return f"[{marker}] {' '.join(parts[:words])}{ELLIPSIS}"

    parts = text.split(" ")
    best: tuple[str, int] | None = None
    low, high = 1, len(parts) - 1  # binary search, assuming the count grows with the prefix
    while low <= high:
        middle = (low + high) // 2
        candidate = line(middle)
        cost = count_tokens(candidate + "\n")
        if cost <= budget:
            best = (candidate, cost)
            low = middle + 1
        else:
            high = middle - 1
    return best


def cited_markers(answer: str) -> list[int]:
    """The distinct ``[n]`` markers of an answer, in order of first appearance."""
    markers: list[int] = []
    for match in _MARKER.finditer(answer):
        marker = int(match.group(1))
        if marker not in markers:
            markers.append(marker)
    return markers


def attributed_citations(
    answer: str, citations: Sequence[Citation], passages: Mapping[str, str], min_support: float = 0.5
) -> list[Citation]:
    """Citations for an answer written without markers (small base models often omit them).

    Each answer sentence is attributed to the passage holding the largest share of its content
    words (see shared.text), if that share reaches `min_support`; the passages so attributed are
    cited in order of first use. `passages` maps chunk ids to their text.
    """
    words_of = {c.chunk_id: content_words(passages.get(c.chunk_id, "")) for c in citations}
    used: list[Citation] = []
    for sentence in sentences(answer):
        words = content_words(sentence)
        scored = [(support(words, words_of[c.chunk_id]), -c.marker, c) for c in citations]
        if not scored:
            break
        best_support, _, best = max(scored, key=lambda item: item[:2])
        if best_support >= min_support and best not in used:
            used.append(best)
    return used


def citations_for(answer: str, citations: Sequence[Citation], passages: Mapping[str, str]) -> list[Citation]:
    """The answer's own [n] markers when it has any, else citations attributed by word overlap."""
    if cited_markers(answer):
        return citations_used(answer, citations)
    return attributed_citations(answer, citations, passages)


def citations_used(answer: str, citations: Sequence[Citation]) -> list[Citation]:
    """The citations the answer refers to, in answer order; markers with no citation are ignored."""
    by_marker = {citation.marker: citation for citation in citations}
    return [by_marker[marker] for marker in cited_markers(answer) if marker in by_marker]
