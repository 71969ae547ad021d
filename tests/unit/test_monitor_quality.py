"""Quality signals of the monitor: groundedness per answer and the per-tenant alert windows."""

from __future__ import annotations

import random

import pytest

from services.monitor.quality import (
    Groundedness,
    QualityMonitor,
    Sample,
    Thresholds,
    cosine_distance,
    groundedness,
    judge_groundedness,
    judge_support,
)
from shared.text import content_word_set, content_words, sentence_word_sets, sentences

CONTEXT = [
    "Kafka stores every topic as partitions of an ordered log. Consumers track offsets.",
    "Weaviate keeps each tenant's chunks in its own shard.",
]


def test_a_sentence_copied_from_the_context_is_grounded() -> None:
    assert groundedness("Kafka stores every topic as partitions of an ordered log [1].", CONTEXT) == 1.0


def test_an_answer_about_something_else_scores_zero() -> None:
    answer = "Sourdough bread rises slowly because wild yeast ferments the dough overnight."
    assert groundedness(answer, CONTEXT) == 0.0


def test_score_is_the_share_of_supported_sentences() -> None:
    answer = "Consumers track their offset. Bananas are yellow fruit grown in Ecuador!"
    result = judge_groundedness(answer, CONTEXT)
    assert (result.judged, result.supported, result.score) == (2, 1, 0.5)


def test_plural_forms_and_case_match() -> None:
    assert groundedness("A CONSUMER tracks the offset.", CONTEXT) == 1.0


def test_sentences_without_content_words_are_not_judged() -> None:
    result = judge_groundedness("Yes. It is. Kafka stores partitions.", CONTEXT)
    assert result.judged == 1
    assert result.score == 1.0


def test_empty_answer_has_no_score_and_no_context_scores_zero() -> None:
    assert groundedness("", CONTEXT) is None
    assert groundedness("Kafka stores partitions.", []) == 0.0


def test_support_threshold_decides_partially_supported_sentences() -> None:
    answer = "Kafka stores partitions of bananas mangoes papayas."  # 3 of 6 content words supported
    assert groundedness(answer, CONTEXT, support_threshold=0.5) == 1.0
    assert groundedness(answer, CONTEXT, support_threshold=0.6) == 0.0


def test_sentences_split_on_punctuation_and_lines_and_drop_citations() -> None:
    assert sentences("One [1]. Two [2, 3]!\nThree? ") == ["One.", "Two!", "Three?"]
    assert "the" not in content_words("The log")
    assert content_words("Replicas and queries") == {"replica", "query"}


def thresholds(**overrides: float) -> Thresholds:
    values: dict[str, float] = {"window_s": 60, "min_samples": 4, "cooldown_s": 30, "drift_reference_size": 3}
    values.update(overrides)
    return Thresholds(**values)  # type: ignore[arg-type]


TRICKY_TEXTS = [
    "a! .b c",  # a break before ".b" only when the blank before "." is not removed first
    "x.\t\ny . z",
    "Tab\tbefore\t. end",
    "line\nbreak\n\nmore? yes!  no",
    "3.5 e.g. i.e.  Ok",
    "\x1cweird\x1f. sep",
    "Caf\u00e9 ol\u00e9. Na\u00efve!  \u03a3\u0399\u03a3. Yes.",
    "[1][2] . . .",
    "Offsets [1, 2] replicate.\rLeaders? Elect [3].",
    "",
    "  ",
]


def _reference_word_sets(text: str) -> list[set[str]]:
    return [words for words in map(content_word_set, sentences(text)) if words]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_sentence_word_sets_are_the_content_words_of_the_sentences(text: str) -> None:
    assert sentence_word_sets(text) == _reference_word_sets(text)


def test_sentence_word_sets_match_on_random_texts() -> None:
    rng = random.Random(7)
    alphabet = list("abcXYZ019 .!?,;:\t\n\r[]\x0b\x1c-_\u00e9\u03a3")
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert sentence_word_sets(text) == _reference_word_sets(text), repr(text)


def test_no_alert_before_min_samples_then_low_groundedness_alerts() -> None:
    monitor = QualityMonitor(thresholds())
    for i in range(3):
        monitor.observe("t", Sample(at=100 + i, failed=False, groundedness=0.1))
    assert monitor.evaluate("t", now=105) == []
    monitor.observe("t", Sample(at=104, failed=False, groundedness=0.1))
    [breach] = monitor.evaluate("t", now=105)
    assert breach.signal == "groundedness"
    assert breach.observed == pytest.approx(0.1)
    assert breach.threshold == 0.5
    assert breach.severity == "critical"  # under half the threshold
    assert breach.samples == 4
    assert "below" in breach.detail


def test_good_groundedness_does_not_alert_and_other_tenants_are_separate() -> None:
    monitor = QualityMonitor(thresholds())
    for i in range(5):
        monitor.observe("good", Sample(at=100 + i, failed=False, groundedness=0.9))
        monitor.observe("bad", Sample(at=100 + i, failed=False, groundedness=0.3))
    assert monitor.evaluate("good", now=110) == []
    [breach] = monitor.evaluate("bad", now=110)
    assert (breach.tenant_id, breach.severity) == ("bad", "warning")


def test_alerts_respect_the_cooldown() -> None:
    monitor = QualityMonitor(thresholds(window_s=1000))
    for i in range(4):
        monitor.observe("t", Sample(at=100 + i, failed=True))
    assert [b.signal for b in monitor.evaluate("t", now=110)] == ["error_rate"]
    assert monitor.evaluate("t", now=120) == []  # within 30 s
    assert [b.signal for b in monitor.evaluate("t", now=141)] == ["error_rate"]


def test_samples_leave_the_window() -> None:
    monitor = QualityMonitor(thresholds())
    for i in range(4):
        monitor.observe("t", Sample(at=100 + i, failed=True))
    assert monitor.signals("t", now=200) == {}  # all older than 60 s


def test_error_and_empty_retrieval_rates() -> None:
    monitor = QualityMonitor(thresholds(error_rate=0.3, empty_retrieval_rate=0.4))
    samples = [
        Sample(at=100, failed=True),
        Sample(at=101, failed=False, groundedness=1.0, empty_retrieval=True),
        Sample(at=102, failed=False, groundedness=1.0, empty_retrieval=True),
        Sample(at=103, failed=False, groundedness=1.0),
        Sample(at=104, failed=False, groundedness=1.0),
    ]
    for sample in samples:
        monitor.observe("t", sample)
    signals = monitor.signals("t", now=105)
    assert signals["error_rate"][0] == pytest.approx(0.2)
    assert signals["error_rate"][1] == 5
    assert signals["empty_retrieval_rate"][0] == pytest.approx(0.5)
    assert signals["empty_retrieval_rate"][1] == 4
    assert [b.signal for b in monitor.evaluate("t", now=105)] == ["empty_retrieval_rate"]


def test_embedding_drift_against_the_reference_centroid() -> None:
    monitor = QualityMonitor(thresholds(embedding_drift=0.25))
    for i in range(3):  # reference: along the x axis
        monitor.observe_embedding("t", [1.0, 0.0], at=100 + i)
    for i in range(4):  # same direction: no drift
        monitor.observe_embedding("t", [2.0, 0.1], at=110 + i)
    assert monitor.signals("t", now=115)["embedding_drift"][0] < 0.01
    assert monitor.evaluate("t", now=115) == []
    for i in range(4):  # later queries along y: the window's centroid turns
        monitor.observe_embedding("t", [0.0, 1.0], at=180 + i)
    drift, count = monitor.signals("t", now=185)["embedding_drift"]
    assert count == 4  # the x-axis queries left the window
    assert drift > 0.9
    assert [b.signal for b in monitor.evaluate("t", now=185)] == ["embedding_drift"]


def test_cosine_distance() -> None:
    assert cosine_distance([1, 0], [1, 0]) == pytest.approx(0.0)
    assert cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert cosine_distance([0, 0], [0, 1]) == 1.0


def test_window_counts_late_and_future_samples_and_judges_an_earlier_time_again() -> None:
    monitor = QualityMonitor(thresholds(window_s=10, min_samples=1))
    for at, g in [(105, 1.0), (100, 0.0), (120, 0.5), (101, 0.5)]:  # out of order; 120 is in the future
        monitor.observe("t", Sample(at=at, failed=False, groundedness=g))
    assert monitor.signals("t", now=106)["groundedness"] == pytest.approx((0.5, 3))
    monitor.observe("t", Sample(at=104, failed=True))  # late, inside the window judged
    assert monitor.signals("t", now=106)["error_rate"] == pytest.approx((0.25, 4))
    assert monitor.signals("t", now=103)["groundedness"] == pytest.approx((0.25, 2))  # earlier: 100, 101
    assert monitor.signals("t", now=121)["groundedness"] == pytest.approx((0.5, 1))  # only 120 is left
    assert monitor.signals("t", now=106) == {}  # what left the window is gone for good


def test_window_mean_is_exact() -> None:
    monitor = QualityMonitor(thresholds(window_s=1000, min_samples=1))
    for i, g in enumerate([1 / 3, 2 / 3, 0.1, 0.9, 0.5, 0.5] * 50):
        monitor.observe("t", Sample(at=100 + i / 100, failed=False, groundedness=g))
    assert monitor.signals("t", now=200)["groundedness"] == (0.5, 300)
    assert monitor.evaluate("t", now=200) == []  # 0.5 is not below the 0.5 threshold


def test_sent_support_is_judged_at_the_threshold_and_sentences_without_words_are_skipped() -> None:
    # 3 of 5 words is exactly the 0.6 threshold (supported); 1 of 2 is not; (0, 0) is not judged.
    assert judge_support([(5, 3), (2, 1), (0, 0)], support_threshold=0.6) == Groundedness(0.5, 2, 1)
    assert judge_support([(0, 0)]) == Groundedness(None, 0, 0)
    assert judge_support([]) == Groundedness(None, 0, 0)
