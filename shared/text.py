"""Word-overlap primitives shared by groundedness (the generator counts each answer sentence's support,
the monitor judges it) and citation attribution (generator).

*Content words* are a text's lower-cased alphanumeric tokens that are not stop words, lightly
normalised (a plural "s" / "ies" is removed) so "offsets" matches "offset". Sentences are split at
".", "!", "?" followed by white space and at line breaks, with citation markers such as "[1]" removed.
The monitor scores every answer with these, so they are written for speed (cached word lookups, a
regex-free tokeniser for ASCII text).
"""

from __future__ import annotations

import re
from functools import lru_cache

_STOP_WORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more
most my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves yes ok okay sure
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
CITATION_MARKER = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# The same breaks with the punctuation mark consumed (it holds no content word): ~1.5x faster, as the
# regex engine need not try a look-behind at every position.
_SENTENCE_BREAK = re.compile(r"[.!?]\s+|\n+")
_TOKEN = re.compile(r"[^\W_]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+([.!?,;:])")
_HAS_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t][.!?,;:]")  # a search: ~2x cheaper than a sub


def normalise(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


class _ContentWordCache(dict[str, str]):
    """token -> its normalised content word, or "" for a token that is not one (a stop word, a single
    letter). Looked up as `cache[token]`, which stays in C for a known token; bounded by clearing."""

    capacity = 200_000

    def __missing__(self, token: str) -> str:
        word = "" if token in STOP_WORDS or (len(token) == 1 and not token.isdigit()) else normalise(token)
        if len(self) >= self.capacity:
            self.clear()
        self[token] = word
        return word


_CONTENT_WORD = _ContentWordCache()
# On ASCII text _TOKEN's tokens are the runs of [A-Za-z0-9]: every other character becomes a space and
# str.split gives the same tokens without the regex engine (~4x faster).
_ASCII_SEPARATORS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def tokens(lowered: str) -> list[str]:
    """The alphanumeric tokens of a lower-cased text (`_TOKEN.findall`, faster on ASCII)."""
    if lowered.isascii():
        return lowered.translate(_ASCII_SEPARATORS).split()
    return _TOKEN.findall(lowered)


def content_word_set(text: str) -> set[str]:
    """Distinct normalised content words of `text`, as a mutable set."""
    words = set(map(_CONTENT_WORD.__getitem__, tokens(text.lower())))
    words.discard("")
    return words


def content_words(text: str) -> frozenset[str]:
    """Distinct normalised content words of `text` (stop words and one-letter tokens dropped)."""
    return frozenset(content_word_set(text))


def _cleaned(text: str) -> str:
    """`text` without citation markers and without blanks before punctuation ("word ." -> "word.")."""
    cleaned = CITATION_MARKER.sub("", text) if "[" in text else text
    if _HAS_SPACE_BEFORE_PUNCTUATION.search(cleaned):
        cleaned = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", cleaned)
    return cleaned


def sentences(text: str) -> list[str]:
    """The sentences of `text`, citation markers removed."""
    return [s for s in map(str.strip, _SENTENCE_END.split(_cleaned(text))) if s]


def sentence_word_sets(text: str) -> list[set[str]]:
    """The content_word_set of each sentence of `text` that has content words, in order: the same as
    `[w for w in map(content_word_set, sentences(text)) if w]`, in about 70% of its time on ASCII text
    (lower-cased once, split without the look-behind, no per-sentence strip)."""
    cleaned = _cleaned(text)
    if not cleaned.isascii():
        return [words for words in map(content_word_set, sentences(text)) if words]
    lookup = _CONTENT_WORD.__getitem__
    result = []
    for piece in _SENTENCE_BREAK.split(cleaned.lower()):
        words = set(map(lookup, piece.translate(_ASCII_SEPARATORS).split()))
        words.discard("")
        if words:
            result.append(words)
    return result


def support(words: frozenset[str] | set[str], source: frozenset[str] | set[str]) -> float:
    """Share of `words` found in `source` (0 when `words` is empty)."""
    return len(words & source) / len(words) if words else 0.0


@lru_cache(maxsize=8192)
def _chunk_words(text: str) -> frozenset[str]:
    """content_words of a retrieved chunk, cached: popular chunks come back in many answers."""
    return content_words(text)


@lru_cache(maxsize=4096)
def context_vocabulary(context: tuple[str, ...]) -> frozenset[str]:
    """The union of the content words of retrieved chunks, cached: a retrieval result comes back for a
    repeated question, and an answer with one chunk needs no union."""
    if len(context) == 1:
        return _chunk_words(context[0])
    return frozenset().union(*map(_chunk_words, context))


def sentence_support(answer: str, context: tuple[str, ...]) -> list[tuple[int, int]]:
    """Per sentence of `answer` that has content words, in order: (its distinct content words, how many
    of them occur in the chunks of `context`). Groundedness judges each sentence by this ratio."""
    vocabulary = context_vocabulary(context)
    return [(len(words), len(words & vocabulary)) for words in sentence_word_sets(answer)]
