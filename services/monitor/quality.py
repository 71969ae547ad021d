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

Steps 1-2 and the overlap count are shared.text.sentence_support. The generator runs them as it
answers, while it holds the answer and its chunks, and sends each sentence's counts in the event
(QueryAnswered.sentence_support); the monitor applies its threshold to those (`judge_support`) and
tokenises the answer itself (`judge_groundedness`) only for an event that carries none.

`QualityMonitor` keeps, per tenant, the requests of a sliding window of event time and judges four
signals once the window holds `min_samples` requests: mean groundedness (alert below the threshold),
empty-retrieval rate and error rate (alert above), and query-embedding drift: 1 - cosine between the
centroid of the tenant's first `drift_reference_size` query embeddings and the centroid of the window's
(alert above). A signal alerts at most once per `cooldown_s` per tenant.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from shared.text import sentence_support


@dataclass(frozen=True)
class Groundedness:
    score: float | None
    judged: int
    supported: int


def judge_support(support: Iterable[tuple[int, int]], *, support_threshold: float = 0.6) -> Groundedness:
    """Supported and judged sentences from each sentence's (content words, of them in the context), as
    shared.text.sentence_support gives them; a sentence without content words is not judged."""
    judged = supported = 0
    for words, in_context in support:
        if words > 0:
            judged += 1
            if in_context / words >= support_threshold:
                supported += 1
    return Groundedness(supported / judged if judged else None, judged, supported)


def judge_groundedness(
    answer: str, context: Iterable[str], *, support_threshold: float = 0.6
) -> Groundedness:
    """Supported and judged sentences of `answer` against the context texts (rule: module docstring)."""
    return judge_support(sentence_support(answer, tuple(context)), support_threshold=support_threshold)


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


_SCALE_BITS = 1100  # every finite double is a multiple of 2**-1074: times 2**1100 it is an exact int


def _scaled(value: float) -> int:
    """`value` * 2**_SCALE_BITS exactly (a finite value)."""
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_SCALE_BITS - denominator.bit_length() + 1)


@dataclass
class _Counts:
    """Sums over a set of samples; groundedness summed exactly (scaled ints), so adding and removing
    samples leaves no rounding behind and the mean is the exact mean rounded once."""

    samples: int = 0
    failed: int = 0
    answered: int = 0
    empty: int = 0
    scored: int = 0
    grounded_sum: int = 0
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0

    def add(self, sample: Sample, sign: int = 1) -> None:
        self.samples += sign
        if sample.failed:
            self.failed += sign
            return
        self.answered += sign
        self.empty += sign * sample.empty_retrieval
        g = sample.groundedness
        if g is None:
            return
        self.scored += sign
        if math.isfinite(g):
            self.grounded_sum += sign * _scaled(g)
        elif math.isnan(g):
            self.nan += sign
        elif g > 0:
            self.pos_inf += sign
        else:
            self.neg_inf += sign

    def groundedness_mean(self) -> float:
        if self.nan or (self.pos_inf and self.neg_inf):
            return math.nan
        if self.pos_inf or self.neg_inf:
            return math.inf if self.pos_inf else -math.inf
        return self.grounded_sum / (self.scored << _SCALE_BITS)


@dataclass
class _TenantState:
    # The request window, kept incrementally (a batch judges it in time proportional to what entered
    # and left it, not to its size): `current` holds the samples counted in `counts` (at <= `watermark`,
    # the last `now` judged) as a min-heap by time, so the oldest leave first whatever order they came
    # in; `future` holds the samples newer than the watermark, counted once `now` reaches them.
    current: list[tuple[float, int, Sample]] = field(default_factory=list)
    future: list[tuple[float, int, Sample]] = field(default_factory=list)
    counts: _Counts = field(default_factory=_Counts)
    watermark: float = -math.inf
    embeddings: _EmbeddingState = field(default_factory=_EmbeddingState)
    last_alert: dict[str, float] = field(default_factory=dict)

    @property
    def samples(self) -> list[Sample]:
        """The samples kept (not yet older than a window judged), oldest first."""
        return [s for _, _, s in sorted(self.current + self.future)]


class QualityMonitor:
    """Per-tenant sliding windows of requests and query embeddings; `evaluate` returns breaches."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self._tenants: dict[str, _TenantState] = {}
        self._seq = itertools.count()  # ties in the heaps never compare Samples

    def _state(self, tenant: str) -> _TenantState:
        return self._tenants.setdefault(tenant, _TenantState())

    def observe(self, tenant: str, sample: Sample) -> None:
        state = self._state(tenant)
        entry = (sample.at, next(self._seq), sample)
        if sample.at <= state.watermark:
            heapq.heappush(state.current, entry)
            state.counts.add(sample)
        else:
            heapq.heappush(state.future, entry)

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

    def _advance(self, state: _TenantState, now: float, since: float) -> None:
        """Count the samples with since <= at <= now: those older than `since` are dropped for good
        (a late old one too), newer than `now` wait in `future`."""
        if now < state.watermark:  # judged at an earlier time than before: count again from scratch
            state.future += state.current
            heapq.heapify(state.future)
            state.current, state.counts = [], _Counts()
        state.watermark = now
        while state.future and state.future[0][0] <= now:
            entry = heapq.heappop(state.future)
            if entry[0] >= since:
                heapq.heappush(state.current, entry)
                state.counts.add(entry[2])
        while state.current and state.current[0][0] < since:
            state.counts.add(heapq.heappop(state.current)[2], -1)

    def _prune(self, state: _TenantState, since: float) -> None:
        emb = state.embeddings
        while emb.window and emb.window[0][0] < since:
            _, old = emb.window.popleft()
            emb.window_sum = [s - v for s, v in zip(emb.window_sum, old, strict=True)]

    def signals(self, tenant: str, now: float) -> dict[Signal, tuple[float, int]]:
        """(value, samples) of each signal that has enough samples in the window ending at `now`."""
        t = self.thresholds
        state = self._state(tenant)
        self._advance(state, now, now - t.window_s)
        self._prune(state, now - t.window_s)
        counts = state.counts
        result: dict[Signal, tuple[float, int]] = {}
        if counts.samples >= t.min_samples:
            result["error_rate"] = (counts.failed / counts.samples, counts.samples)
        if counts.answered >= t.min_samples:
            result["empty_retrieval_rate"] = (counts.empty / counts.answered, counts.answered)
        if counts.scored >= t.min_samples:
            result["groundedness"] = (counts.groundedness_mean(), counts.scored)
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
