"""Word-overlap primitives shared by groundedness scoring (monitor) and citation attribution (generator).

*Content words* are a text's lower-cased alphanumeric tokens that are not stop words, lightly
normalised (a plural "s" / "ies" is removed) so "offsets" matches "offset". Sentences are split at
".", "!", "?" followed by white space and at line breaks, with citation markers such as "[1]" removed.
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
_TOKEN = re.compile(r"[^\W_]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+([.!?,;:])")


@lru_cache(maxsize=65536)
def normalise(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def content_words(text: str) -> frozenset[str]:
    """Distinct normalised content words of `text` (stop words and one-letter tokens dropped)."""
    return frozenset(
        normalise(token)
        for token in _TOKEN.findall(text.lower())
        if token not in STOP_WORDS and (len(token) > 1 or token.isdigit())
    )


def sentences(text: str) -> list[str]:
    """The sentences of `text`, citation markers removed."""
    cleaned = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", CITATION_MARKER.sub("", text))
    return [s.strip() for s in _SENTENCE_END.split(cleaned) if s.strip()]


def support(words: frozenset[str], source: frozenset[str]) -> float:
    """Share of `words` found in `source` (0 when `words` is empty)."""
    return len(words & source) / len(words) if words else 0.0
