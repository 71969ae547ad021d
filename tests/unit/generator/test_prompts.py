"""Prompt templates, context packing under a token budget, and citations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from llmops.query.v1.query_pb2 import Citation, RetrievedChunk

from services.generator.prompts import (
    TEMPLATES_DIR,
    PromptTemplate,
    TemplateRegistry,
    approx_token_count,
    citations_for,
    citations_used,
    cited_markers,
    pack_context,
    version_key,
)
from shared.errors import PermanentError

# The test LLM (deploy/triton/models/tiny_llm) answers from the first line that looks like this.
TINY_LLM_PASSAGE = re.compile(r"^\[(\d+)\]\s*(.+)$", re.MULTILINE)

VALID = """
id = "qa"
version = "v1"
template = \"\"\"Context:
{context}
Question: {question}
Answer:\"\"\"
stop = ["\\n\\n"]
"""


def valid(version: str = "v1") -> str:
    return VALID.replace('version = "v1"', f'version = "{version}"')


def chunk(n: int, text: str | None = None, words: int = 5) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=f"doc{n}#0",
        document_id=f"doc{n}",
        text=text if text is not None else " ".join(f"w{n}x{i}" for i in range(words)),
        source_uri=f"s3://bucket/doc{n}.md",
        score=1.0 - n / 100,
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# Templates


def test_shipped_templates_load_with_both_versions() -> None:
    registry = TemplateRegistry()
    assert registry.directory == TEMPLATES_DIR
    assert "grounded_qa" in registry.ids()
    assert registry.versions("grounded_qa")[:2] == ["v1", "v2"]
    for version in registry.versions("grounded_qa"):
        template = registry.get("grounded_qa", version)
        assert template.id == "grounded_qa"
        assert template.version == version
        # A base model goes on with another question, a repeated "Answer:", or an invented "[n]" passage.
        assert template.stop == ("\nQuestion:", "\nAnswer:", "\n\n", "\n[")
        assert template.max_tokens > 0
        assert template.description
        assert template.template.rstrip().endswith("Answer:")


def test_shipped_templates_differ_between_versions() -> None:
    registry = TemplateRegistry()
    v1, v2 = registry.get("grounded_qa", "v1"), registry.get("grounded_qa", "v2")
    assert v1.template != v2.template
    assert "I don't know" in v2.template


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_render_puts_context_and_question_in_place(version: str) -> None:
    template = TemplateRegistry().get("grounded_qa", version)
    context, _ = pack_context(
        [chunk(1, "Kafka keeps records in partitions. Each has a leader."), chunk(2)], budget_tokens=200
    )
    prompt = template.render(context, "Where does Kafka keep records?")
    assert context in prompt
    assert "Question: Where does Kafka keep records?" in prompt
    assert prompt.endswith("Answer:")  # a base model completes from here
    assert "{context}" not in prompt and "{question}" not in prompt
    # The first "[n] ..." line of the prompt is the first passage: what tiny_llm copies.
    first = TINY_LLM_PASSAGE.search(prompt)
    assert first is not None
    assert first.group(0) == "[1] Kafka keeps records in partitions. Each has a leader."


def test_render_keeps_braces_and_placeholders_in_the_values() -> None:
    template = PromptTemplate(
        id="t", version="v1", template="C: {context}\nQ: {question}\nA:", stop=("\n",), max_tokens=8
    )
    assert template.render("a {question} {x}", "b {context}") == "C: a {question} {x}\nQ: b {context}\nA:"


def test_unknown_template_and_version_are_permanent_errors() -> None:
    registry = TemplateRegistry()
    with pytest.raises(PermanentError, match=r"unknown prompt template 'nope'.*grounded_qa"):
        registry.get("nope")
    with pytest.raises(PermanentError, match="unknown prompt template"):
        registry.versions("nope")
    with pytest.raises(PermanentError, match=r"'grounded_qa' has no version 'v99'.*v1, v2"):
        registry.get("grounded_qa", "v99")


def test_latest_version_uses_natural_order(tmp_path: Path) -> None:
    for version in ("v1", "v2", "v10", "v9"):
        write(tmp_path, f"qa/{version}.toml", valid(version))
    registry = TemplateRegistry(tmp_path)
    assert registry.versions("qa") == ["v1", "v2", "v9", "v10"]
    assert registry.get("qa").version == "v10"
    assert registry.get("qa", None).version == "v10"
    assert registry.get("qa", "").version == "v10"
    assert registry.get("qa", "v9").version == "v9"
    assert version_key("v2") < version_key("v10") < version_key("v10.1")


def test_shipped_latest_is_the_highest_version() -> None:
    registry = TemplateRegistry()
    assert registry.get("grounded_qa").version == registry.versions("grounded_qa")[-1]


def test_defaults_of_optional_fields(tmp_path: Path) -> None:
    write(tmp_path, "qa.toml", VALID)
    template = TemplateRegistry(tmp_path).get("qa")
    assert template.description == ""
    assert template.max_tokens == 256
    assert template.stop == ("\n\n",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (VALID.replace("{context}", "ctx"), "lacks the {context} placeholder"),
        (VALID.replace("{question}", "q"), "lacks the {question} placeholder"),
        (VALID.replace('stop = ["\\n\\n"]', "stop = []"), "'stop' must be a non-empty"),
        (VALID.replace('stop = ["\\n\\n"]', ""), "'stop' must be a non-empty"),
        (VALID.replace('stop = ["\\n\\n"]', 'stop = [""]'), "non-empty strings"),
        (VALID.replace('id = "qa"', ""), "'id' must be a non-empty string"),
        (VALID.replace('version = "v1"', ""), "'version' must be a non-empty"),
        (VALID + "max_tokens = 0\n", "'max_tokens' must be a positive integer"),
        (VALID + "temperature = 0.2\n", "unknown fields"),
        ('id = "qa"\ntemplate = """unterminated', "not valid TOML"),
    ],
)
def test_invalid_template_file_is_rejected_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    write(tmp_path, "good.toml", valid("v0"))
    bad = write(tmp_path, "sub/bad.toml", text)
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        TemplateRegistry(tmp_path)
    assert problem in str(info.value)


def test_duplicate_template_version_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", VALID)
    write(tmp_path, "b.toml", VALID)
    with pytest.raises(ValueError, match="already defined"):
        TemplateRegistry(tmp_path)


def test_missing_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        TemplateRegistry(tmp_path / "missing")


# Context packing


def test_approx_token_count() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("one") == 2
    assert approx_token_count("one two three") == 4
    assert approx_token_count("a b c d\ne f") == 8


def test_packing_numbers_passages_in_order_with_citations() -> None:
    chunks = [chunk(3), chunk(1), chunk(2)]
    context, citations = pack_context(chunks, budget_tokens=1000, count_tokens=approx_token_count)
    lines = context.split("\n")
    assert lines == [f"[{i + 1}] {c.text}" for i, c in enumerate(chunks)]
    assert citations == [
        Citation(marker=i + 1, chunk_id=c.chunk_id, document_id=c.document_id, source_uri=c.source_uri)
        for i, c in enumerate(chunks)
    ]


def test_packing_collapses_newlines_inside_a_passage() -> None:
    context, _ = pack_context([chunk(1, "first line\nsecond\n\n  third\tword")], budget_tokens=100)
    assert context == "[1] first line second third word"


def test_packing_respects_the_budget() -> None:
    chunks = [chunk(n, words=9) for n in range(1, 11)]  # each line: 10 words + newline -> 14 tokens
    for budget in (14, 27, 28, 50, 100, 139, 140, 1000):
        context, citations = pack_context(chunks, budget_tokens=budget, count_tokens=approx_token_count)
        lines = context.split("\n")
        spent = sum(approx_token_count(line + "\n") for line in lines)
        assert spent <= budget
        assert len(citations) == len(lines) == min(budget // 14, 10)
        assert [c.marker for c in citations] == list(range(1, len(lines) + 1))


def test_packing_counts_the_newline_of_each_line() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text)

    pack_context([chunk(1, "abc")], budget_tokens=100, count_tokens=count)
    assert calls == ["[1] abc\n"]
    # "[1] ab cd\n" is 10 characters, over a budget of 9: cut to "[1] ab…\n" (8).
    assert pack_context([chunk(1, "ab cd")], budget_tokens=9, count_tokens=len)[0] == "[1] ab…"
    # A single word cannot be cut on a word boundary: left out.
    assert pack_context([chunk(1, "abc")], budget_tokens=7, count_tokens=len)[0] == ""


def test_later_passage_over_the_remaining_budget_is_skipped_not_truncated() -> None:
    chunks = [chunk(1, words=5), chunk(2, words=40), chunk(3, words=5)]
    context, citations = pack_context(chunks, budget_tokens=20, count_tokens=approx_token_count)
    # [1] + 5 words = 6 words -> 8 tokens; the 40-word passage does not fit the 12 left; the third does.
    assert context == f"[1] {chunks[0].text}\n[2] {chunks[2].text}"
    assert [(c.marker, c.chunk_id) for c in citations] == [(1, "doc1#0"), (2, "doc3#0")]
    assert "…" not in context


def test_first_passage_over_the_budget_is_truncated_on_a_word_boundary() -> None:
    long = chunk(1, words=100)
    context, citations = pack_context([long, chunk(2)], budget_tokens=30, count_tokens=approx_token_count)
    assert "\n" not in context  # the cut first passage fills the budget; nothing else fits
    assert context.startswith("[1] ") and context.endswith("…")
    kept = context.removeprefix("[1] ").removesuffix("…").split(" ")
    assert kept == long.text.split(" ")[: len(kept)]  # whole words only
    assert approx_token_count(context + "\n") <= 30
    # The longest prefix that fits: one more word would not.
    one_more = "[1] " + " ".join(long.text.split(" ")[: len(kept) + 1]) + "…\n"
    assert approx_token_count(one_more) > 30
    assert [c.chunk_id for c in citations] == ["doc1#0"]


def test_nothing_fits_a_tiny_budget() -> None:
    assert pack_context([chunk(1), chunk(2)], budget_tokens=0) == ("", [])
    assert pack_context([chunk(1), chunk(2)], budget_tokens=2) == ("", [])  # not even "[1] word…"
    assert pack_context([], budget_tokens=100) == ("", [])


def test_duplicate_chunks_are_included_once() -> None:
    chunks = [chunk(1), chunk(2), chunk(1), chunk(3), chunk(2)]
    context, citations = pack_context(chunks, budget_tokens=1000)
    assert [c.chunk_id for c in citations] == ["doc1#0", "doc2#0", "doc3#0"]
    assert [c.marker for c in citations] == [1, 2, 3]
    assert len(context.split("\n")) == 3


def test_empty_passages_are_left_out() -> None:
    context, citations = pack_context([chunk(1, " \n "), chunk(2, "real text")], budget_tokens=100)
    assert context == "[1] real text"
    assert [c.chunk_id for c in citations] == ["doc2#0"]


# Citations


def test_cited_markers_are_distinct_in_order_of_appearance() -> None:
    assert cited_markers("Kafka [2] keeps [1] records [2][3]. See [12] and [x] or [ 4 ].") == [2, 1, 3, 12]
    assert cited_markers("no citations here") == []


def test_citations_used_follow_the_answer_and_ignore_unknown_markers() -> None:
    _, citations = pack_context([chunk(1), chunk(2), chunk(3)], budget_tokens=1000)
    used = citations_used("Partitions hold records [3], replicated [1] [7] [3].", citations)
    assert [(c.marker, c.chunk_id) for c in used] == [(3, "doc3#0"), (1, "doc1#0")]


def test_citations_used_invents_nothing() -> None:
    _, citations = pack_context([chunk(1), chunk(2)], budget_tokens=1000)
    assert citations_used("I don't know.", citations) == []
    assert citations_used("Something [9].", citations) == []
    assert citations_used("Something [1].", []) == []


def test_tiny_llm_style_answer_cites_the_first_passage() -> None:
    template = TemplateRegistry().get("grounded_qa")
    context, citations = pack_context(
        [chunk(1, "Brokers store partitions on disk. More text."), chunk(2)], budget_tokens=200
    )
    match = TINY_LLM_PASSAGE.search(template.render(context, "Where?"))
    assert match is not None
    answer = f"{match.group(2).split('. ')[0]}. [{match.group(1)}]"  # what tiny_llm would say
    assert answer == "Brokers store partitions on disk. [1]"
    assert citations_used(answer, citations) == citations[:1]


def test_answers_without_markers_are_attributed_by_word_overlap() -> None:
    citations = [
        Citation(marker=1, chunk_id="bread#0", document_id="bread.md"),
        Citation(marker=2, chunk_id="kafka#0", document_id="kafka.md"),
    ]
    passages = {
        "bread#0": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
        "kafka#0": "Kafka stores every topic as partitions of an ordered log; consumers track offsets.",
    }
    answer = "Kafka keeps each topic as partitions of an ordered log. Consumers track their offsets."
    assert citations_for(answer, citations, passages) == [citations[1]]
    both = "Wild yeast ferments the dough overnight. Topics are partitions of a log."
    assert citations_for(both, citations, passages) == [citations[0], citations[1]]
    # Unrelated text cites nothing, and explicit markers win over attribution.
    assert citations_for("The moon orbits the earth every month.", citations, passages) == []
    assert citations_for("Yeast ferments dough [2].", citations, passages) == [citations[1]]
