"""Token-aware chunking: sizes, overlap, substrings of the input, full coverage, boundary preference."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from tokenizers import Tokenizer

from services.embedder.chunking import Chunker, TextChunk, load_tokenizer

_VOCABULARY = [
    *("kafka", "partition", "broker", "consumer", "offset", "retention", "replica", "leader", "tenant"),
    *("query", "embedding", "vector", "index", "latency", "budget", "schema", "topic", "producer"),
    *("commit", "rebalance", "cluster", "shard", "cache", "gateway", "model"),
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer()


def document(paragraphs: int, seed: int = 7) -> str:
    """Paragraphs of sentences; every word is unique (word0001 ...) so positions are unambiguous."""
    rng = random.Random(seed)
    counter = 0
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = []
            for _ in range(rng.randint(6, 16)):
                counter += 1
                words.append(f"{rng.choice(_VOCABULARY)}{counter}")
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def spans(text: str, chunks: list[TextChunk]) -> list[tuple[int, int]]:
    """Where each chunk lies in `text`; chunks come in order, each starting after the previous one."""
    result = []
    position = 0
    for chunk in chunks:
        start = text.find(chunk.text, position)
        assert start >= 0, f"chunk {chunk.index} is not a substring of the input (after {position})"
        result.append((start, start + len(chunk.text)))
        position = start + 1
    return result


def count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def test_empty_and_whitespace_give_no_chunks(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer)
    assert chunker.split("") == []
    assert chunker.split(" \n\n\t ") == []


def test_short_text_gives_one_chunk(tokenizer: Tokenizer) -> None:
    text = "  Kafka keeps each partition ordered.  "
    chunks = Chunker(tokenizer).split(text)
    assert chunks == [TextChunk(index=0, text="Kafka keeps each partition ordered.", token_count=8)]


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(256, 32), (64, 16), (40, 0), (510, 64), (12, 11)])
def test_chunks_fit_cover_and_are_substrings(tokenizer: Tokenizer, chunk_tokens: int, overlap: int) -> None:
    text = document(paragraphs=30)
    chunks = Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap).split(text)
    assert len(chunks) > 1
    assert [c.index for c in chunks] == list(range(len(chunks)))
    located = spans(text, chunks)
    for chunk in chunks:
        assert chunk.text == chunk.text.strip()
        assert chunk.token_count == count(tokenizer, chunk.text)
        assert 0 < chunk.token_count <= chunk_tokens
    # Full coverage: the spans start at the first word, end at the last and leave out only whitespace.
    assert located[0][0] == 0 and located[-1][1] == len(text)
    for (_, previous_end), (start, _) in itertools.pairwise(located):
        assert start <= previous_end or text[previous_end:start].isspace()
    covered = {word for chunk in chunks for word in chunk.text.split()}
    assert set(text.split()) <= covered


def messy_document(seed: int = 13) -> str:
    """Punctuation, URLs, code, accents, CJK, emoji, control characters and over-long words."""
    rng = random.Random(seed)
    pieces = [
        "Don't panic!",
        "e.g. the U.S.A.",
        "https://example.com/a/b?c=d&e=f#g",
        "snake_case_name()",
        "Café naïve résumé",
        "日本語のテキスト。次の文!",
        "emoji 😀👍",
        "x\u0000y\u0007z",
        "tab\there",
        "(nested [brackets] {braces})",
        '"quoted." Then',
        "1,234.56 €",
        "C++ / C# / F#",
        "".join(f"{i:02x}" for i in range(50)),
        "a" * 150,
        "\n\n",
        "\n",
        "— dash – en",
    ]
    return " ".join(rng.choice(pieces) for _ in range(3000))


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(256, 32), (24, 6), (7, 3)])
def test_messy_text_counts_are_exact(tokenizer: Tokenizer, chunk_tokens: int, overlap: int) -> None:
    text = messy_document()
    chunks = Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap).split(text)
    assert all(chunk.text in text for chunk in chunks)
    for chunk in chunks:
        assert chunk.token_count == count(tokenizer, chunk.text) <= chunk_tokens


def test_overlap_is_honoured(tokenizer: Tokenizer) -> None:
    text = document(paragraphs=40, seed=11)
    chunks = Chunker(tokenizer, chunk_tokens=128, overlap_tokens=32).split(text)
    located = spans(text, chunks)
    assert len(chunks) > 10
    for (_, previous_end), (start, _) in itertools.pairwise(located):
        shared = count(tokenizer, text[start:previous_end])
        # Moved back to a word start at most chunk_tokens // 8 tokens: ~overlap, never less.
        assert 32 <= shared <= 32 + 128 // 8 + 4, shared


def test_no_overlap_means_adjacent_chunks(tokenizer: Tokenizer) -> None:
    text = document(paragraphs=10, seed=3)
    chunks = Chunker(tokenizer, chunk_tokens=50, overlap_tokens=0).split(text)
    located = spans(text, chunks)
    for (_, previous_end), (start, _) in itertools.pairwise(located):
        assert text[previous_end:start].strip() == ""


def test_prefers_sentence_end_in_last_quarter(tokenizer: Tokenizer) -> None:
    # 30 words (1 token each) in the first sentence, then a long second sentence: with a window of
    # 36 tokens, the sentence end at token 31 lies in the last quarter (27..36) and wins over a cut at 36.
    first = " ".join(["alpha"] * 30) + "."
    second = " ".join(["beta"] * 60) + "."
    chunks = Chunker(tokenizer, chunk_tokens=36, overlap_tokens=4).split(f"{first} {second}")
    assert chunks[0].text == first
    assert chunks[0].token_count == 31


def test_prefers_paragraph_break_over_sentence_end(tokenizer: Tokenizer) -> None:
    first = " ".join(["alpha"] * 27) + "."  # paragraph ends at token 28
    second = "Beta gamma." + " " + " ".join(["delta"] * 40) + "."  # sentence ends at token 31
    text = f"{first}\n\n{second}"
    chunks = Chunker(tokenizer, chunk_tokens=36, overlap_tokens=4).split(text)
    assert chunks[0].text == first


def test_sentence_end_too_early_is_not_used(tokenizer: Tokenizer) -> None:
    # The only sentence end is at token 11 of a 36-token window: outside the last quarter, so the
    # window is cut at a word boundary at its full size instead.
    text = " ".join(["alpha"] * 10) + ". " + " ".join(["beta"] * 80)
    chunks = Chunker(tokenizer, chunk_tokens=36, overlap_tokens=4).split(text)
    assert chunks[0].token_count == 36
    assert chunks[0].text.endswith("beta")


def test_words_are_not_cut_when_avoidable(tokenizer: Tokenizer) -> None:
    # "unbelievable" style words span several wordpieces; windows end between words.
    text = " ".join(f"supercalifragilistic{i}" for i in range(200))
    chunks = Chunker(tokenizer, chunk_tokens=50, overlap_tokens=10).split(text)
    words = set(text.split())
    for chunk in chunks:
        assert set(chunk.text.split()) <= words


def test_giant_word_is_cut_and_still_fits(tokenizer: Tokenizer) -> None:
    # WordPiece reads words of up to 100 characters (longer ones are one [UNK]): 96 hex characters
    # make one word of dozens of wordpieces, longer than a 16-token window.
    first = "".join(f"{i:02x}" for i in range(48))
    second = "".join(f"{i:02x}" for i in range(200, 248))
    assert count(tokenizer, first) > 32 and count(tokenizer, second) > 32
    text = f"{first} and {second}"
    chunks = Chunker(tokenizer, chunk_tokens=16, overlap_tokens=4).split(text)
    assert len(chunks) > 3
    assert all(0 < c.token_count <= 16 for c in chunks)
    assert all(c.text in text for c in chunks)
    assert spans(text, chunks)[-1][1] == len(text)


def test_offsets_cut_the_original_text(tokenizer: Tokenizer) -> None:
    # Lowercasing and accent stripping happen in the tokenizer, not in the chunks.
    text = "Café ÜBER Straße. " * 100
    chunks = Chunker(tokenizer, chunk_tokens=30, overlap_tokens=5).split(text)
    assert all(c.text in text for c in chunks)
    assert chunks[0].text.startswith("Café ÜBER Straße.")
    assert re.fullmatch(r"(Café ÜBER Straße\. ?)+", chunks[0].text)


def test_deterministic(tokenizer: Tokenizer) -> None:
    text = document(paragraphs=12, seed=5)
    assert Chunker(tokenizer, 64, 8).split(text) == Chunker(load_tokenizer(), 64, 8).split(text)


def test_callers_tokenizer_settings_do_not_matter_nor_change(tokenizer: Tokenizer) -> None:
    padded = Tokenizer.from_file(str(tokenizer_path()))  # tokenizer.json pads and truncates at 128
    assert padded.padding is not None
    text = document(paragraphs=8)
    assert Chunker(padded, 64, 8).split(text) == Chunker(tokenizer, 64, 8).split(text)
    assert padded.padding is not None and padded.truncation is not None


def tokenizer_path() -> object:
    from services.embedder.chunking import model_dir

    return model_dir() / "tokenizer.json"


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap", "message"),
    [
        (511, 32, "chunk_tokens must be between 1 and 510"),
        (0, 0, "chunk_tokens must be between 1 and 510"),
        (64, 64, "overlap_tokens must be >= 0 and < chunk_tokens"),
        (64, 100, "overlap_tokens must be >= 0 and < chunk_tokens"),
        (64, -1, "overlap_tokens must be >= 0 and < chunk_tokens"),
    ],
)
def test_invalid_parameters_raise(
    tokenizer: Tokenizer, chunk_tokens: int, overlap: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap)


def test_load_tokenizer_neither_pads_nor_truncates(tokenizer: Tokenizer) -> None:
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert count(tokenizer, "word " * 1000) == 1000
