"""Online quality signals (pure): groundedness per answer and per-tenant windows that raise alerts.

Groundedness of an answer (`groundedness`) is the share of its sentences that the retrieved context
supports, by token overlap:

1. Citation markers such as "[1]" are removed, and the answer is split into sentences at ".", "!", "?"
   followed by white space, and at line breaks.
2. A sentence's *content words* are its lower-cased alphanumeric tokens that are not stop words,
   lightly normalised (a plural "s" / "ies" is removed) so "offsets" matches "offset".
3. A sentence is *supported* when at least `support_threshold` (default 0.6) of its distinct content
   words occur in the union of the retrieved chunks' content words.
4. Sentences without content words ("Yes.") are not judged. The score is supported / judged; it is None
   when no sentence could be judged (an empty answer). With no retrieved context every judged sentence
   is unsupported (score 0).

`QualityMonitor` keeps, per tenant, the requests of a sliding window of event time and judges four
signals once the window holds `min_samples` requests: mean groundedness (alert below the threshold),
empty-retrieval rate and error rate (alert above), and query-embedding drift: 1 - cosine between the
centroid of the tenant's first `drift_reference_size` query embeddings and the centroid of the window's
(alert above). A signal alerts at most once per `cooldown_s` per tenant.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

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
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_TOKEN = re.compile(r"[^\W_]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"[ \t]+([.!?,;:])")


@lru_cache(maxsize=65536)
def _normalise(token: str) -> str:
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def content_words(text: str) -> frozenset[str]:
    """Distinct normalised content words of `text` (stop words and one-letter tokens dropped)."""
    return frozenset(
        _normalise(token)
        for token in _TOKEN.findall(text.lower())
        if token not in STOP_WORDS and (len(token) > 1 or token.isdigit())
    )


@lru_cache(maxsize=8192)
def _context_words(text: str) -> frozenset[str]:
    """content_words of a retrieved chunk, cached: popular chunks come back in many answers."""
    return content_words(text)


def sentences(answer: str) -> list[str]:
    """The answer's sentences, citation markers removed."""
    cleaned = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _CITATION.sub("", answer))
    return [s.strip() for s in _SENTENCE_END.split(cleaned) if s.strip()]


@dataclass(frozen=True)
class Groundedness:
    score: float | None
    judged: int
    supported: int


def judge_groundedness(
    answer: str, context: Iterable[str], *, support_threshold: float = 0.6
) -> Groundedness:
    """Supported and judged sentences of `answer` against the context texts (rule: module docstring)."""
    vocabulary: set[str] = set()
    for text in context:
        vocabulary |= _context_words(text)
    judged = supported = 0
    for sentence in sentences(answer):
        words = content_words(sentence)
        if not words:
            continue
        judged += 1
        if len(words & vocabulary) / len(words) >= support_threshold:
            supported += 1
    return Groundedness(supported / judged if judged else None, judged, supported)


def groundedness(answer: str, context: Iterable[str], *, support_threshold: float = 0.6) -> float | None:
    """Share of the answer's sentences supported by the context, in [0, 1]; None if none was judged."""
    return judge_groundedness(answer, context, support_threshold=support_threshold).score


# --- windows and alerts ----------------------------------------------------------------------------

Signal = Literal["groundedness", "empty_retrieval_rate", "error_rate", "embedding_drift"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Sample:
    """One finished request as the quality window sees it (`at`: event time, epoch seconds)."""

    at: float
    failed: bool
    groundedness: float | None = None
    empty_retrieval: bool = False


@dataclass(frozen=True)
class Thresholds:
    window_s: float = 300.0
    min_samples: int = 20
    groundedness: float = 0.5
    empty_retrieval_rate: float = 0.2
    error_rate: float = 0.05
    embedding_drift: float = 0.25
    drift_reference_size: int = 200
    cooldown_s: float = 600.0


@dataclass(frozen=True)
class Breach:
    tenant_id: str
    signal: Signal
    observed: float
    threshold: float
    severity: Severity
    window_start: float
    window_end: float
    samples: int

    @property
    def detail(self) -> str:
        direction = "below" if self.signal == "groundedness" else "above"
        return (
            f"{self.signal} {self.observed:.3f} is {direction} the threshold {self.threshold:.3f} "
            f"over {self.samples} samples"
        )


def _severity(signal: Signal, observed: float, threshold: float) -> Severity:
    """Critical when the signal is far past its threshold: groundedness under half of it, a rate or
    the drift over twice it."""
    if signal == "groundedness":
        return "critical" if observed < threshold / 2 else "warning"
    return "critical" if observed > 2 * threshold else "warning"


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """1 - cosine similarity; 1.0 when either vector is zero."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / norm if norm else 1.0


@dataclass
class _EmbeddingState:
    reference_sum: list[float] = field(default_factory=list)
    reference_count: int = 0
    window: deque[tuple[float, tuple[float, ...]]] = field(default_factory=deque)
    window_sum: list[float] = field(default_factory=list)


@dataclass
class _TenantState:
    samples: deque[Sample] = field(default_factory=deque)
    embeddings: _EmbeddingState = field(default_factory=_EmbeddingState)
    last_alert: dict[str, float] = field(default_factory=dict)


class QualityMonitor:
    """Per-tenant sliding windows of requests and query embeddings; `evaluate` returns breaches."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._tenants: dict[str, _TenantState] = {}

    def _state(self, tenant: str) -> _TenantState:
        return self._tenants.setdefault(tenant, _TenantState())

    def observe(self, tenant: str, sample: Sample) -> None:
        self._state(tenant).samples.append(sample)

    def observe_embedding(self, tenant: str, vector: Sequence[float], at: float) -> None:
        """A query embedding: the first `drift_reference_size` form the reference, later ones the window."""
        if not vector:
            return
        emb = self._state(tenant).embeddings
        if emb.reference_count < self.thresholds.drift_reference_size:
            if not emb.reference_sum:
                emb.reference_sum = [0.0] * len(vector)
            if len(vector) != len(emb.reference_sum):
                return
            emb.reference_sum = [s + v for s, v in zip(emb.reference_sum, vector, strict=True)]
            emb.reference_count += 1
            return
        if len(vector) != len(emb.reference_sum):
            return
        if not emb.window_sum:
            emb.window_sum = [0.0] * len(vector)
        emb.window.append((at, tuple(vector)))
        emb.window_sum = [s + v for s, v in zip(emb.window_sum, vector, strict=True)]

    def _prune(self, state: _TenantState, since: float) -> None:
        # Samples arrive roughly in event-time order; prune by filtering (a late old one is dropped too).
        if any(s.at < since for s in state.samples):
            state.samples = deque(s for s in state.samples if s.at >= since)
        emb = state.embeddings
        while emb.window and emb.window[0][0] < since:
            _, old = emb.window.popleft()
            emb.window_sum = [s - v for s, v in zip(emb.window_sum, old, strict=True)]

    def signals(self, tenant: str, now: float) -> dict[Signal, tuple[float, int]]:
        """(value, samples) of each signal that has enough samples in the window ending at `now`."""
        t = self.thresholds
        state = self._state(tenant)
        self._prune(state, now - t.window_s)
        window = [s for s in state.samples if s.at <= now]
        result: dict[Signal, tuple[float, int]] = {}
        if len(window) >= t.min_samples:
            result["error_rate"] = (sum(s.failed for s in window) / len(window), len(window))
        answered = [s for s in window if not s.failed]
        if len(answered) >= t.min_samples:
            result["empty_retrieval_rate"] = (
                sum(s.empty_retrieval for s in answered) / len(answered),
                len(answered),
            )
        scored = [s.groundedness for s in answered if s.groundedness is not None]
        if len(scored) >= t.min_samples:
            result["groundedness"] = (sum(scored) / len(scored), len(scored))
        emb = state.embeddings
        if emb.reference_count >= t.drift_reference_size and len(emb.window) >= t.min_samples:
            result["embedding_drift"] = (cosine_distance(emb.reference_sum, emb.window_sum), len(emb.window))
        return result

    def evaluate(self, tenant: str, now: float) -> list[Breach]:
        """Breached signals of `tenant` in the window ending at `now` (each at most once per cooldown)."""
        t = self.thresholds
        limits: dict[Signal, float] = {
            "groundedness": t.groundedness,
            "empty_retrieval_rate": t.empty_retrieval_rate,
            "error_rate": t.error_rate,
            "embedding_drift": t.embedding_drift,
        }
        state = self._state(tenant)
        breaches = []
        for signal, (observed, count) in self.signals(tenant, now).items():
            limit = limits[signal]
            breached = observed < limit if signal == "groundedness" else observed > limit
            if not breached:
                continue
            last = state.last_alert.get(signal)
            if last is not None and now - last < t.cooldown_s:
                continue
            state.last_alert[signal] = now
            breaches.append(
                Breach(
                    tenant_id=tenant,
                    signal=signal,
                    observed=observed,
                    threshold=limit,
                    severity=_severity(signal, observed, limit),
                    window_start=now - t.window_s,
                    window_end=now,
                    samples=count,
                )
            )
        return breaches
