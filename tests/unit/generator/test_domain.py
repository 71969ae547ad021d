"""The generator's QueryAnswered: each answer sentence's support in the chunks it was given, which the
monitor judges as the same groundedness it gives the text."""

from __future__ import annotations

from datetime import UTC, datetime

from llmops.query.v1.events_pb2 import ContextRetrieved, QueryAnswered, QueryRequested
from llmops.query.v1.query_pb2 import RetrievedChunk

from services.generator.domain import query_answered
from services.generator.prompts import PromptTemplate
from services.generator.routing import ModelTarget
from services.monitor import domain as monitor_domain
from services.monitor.redaction import RedactionPolicy
from shared.events import new_meta

TEMPLATE = PromptTemplate(
    id="grounded_qa", version="v2", template="{context}\n{question}", stop=(), max_tokens=64
)


def _answered(answer: str, chunks: list[str]) -> QueryAnswered:
    event = ContextRetrieved(
        meta=new_meta(tenant_id="t", producer="retriever"),
        request=QueryRequested(question="Where does Kafka keep offsets?"),
        chunks=[RetrievedChunk(chunk_id=f"c{i}", text=text) for i, text in enumerate(chunks)],
    )
    return query_answered(
        event,
        answer=answer,
        citations=[],
        template=TEMPLATE,
        target=ModelTarget("tiny_llm"),
        prompt_tokens=10,
        completion_tokens=5,
        timings_ms={"generate": 1.0},
        producer="generator",
    )


def test_each_sentence_with_content_words_gets_its_counts_in_order() -> None:
    answered = _answered(
        "Kafka stores offsets [1]. Yes. Bananas are yellow fruit, offsets too!",
        ["Kafka keeps consumer offsets in a compacted topic.", "A broker stores partitions."],
    )
    # "Kafka stores offsets": kafka, store, offset, all in the chunks (plural folded, one per chunk);
    # "Yes." has no content word; the last: banana, yellow, fruit, offset, one of four in the chunks.
    assert [(s.content_words, s.words_in_context) for s in answered.sentence_support] == [(3, 3), (4, 1)]


def test_the_monitor_scores_the_sent_support_as_it_scores_the_text() -> None:
    answered = _answered(
        "Kafka stores offsets. Bananas are yellow fruit.",
        ["Kafka keeps consumer offsets; a broker stores them."],
    )
    policy, now = RedactionPolicy(), datetime.now(UTC)
    sent = monitor_domain.scored_answered_row(
        answered, redaction=policy, received_at=now, support_threshold=0.6
    )
    answered.ClearField("sentence_support")
    judged_here = monitor_domain.scored_answered_row(
        answered, redaction=policy, received_at=now, support_threshold=0.6
    )
    assert sent["groundedness"] == judged_here["groundedness"] == 0.5


def test_an_answer_without_context_is_unsupported_and_an_empty_one_has_no_sentences() -> None:
    assert [
        (s.content_words, s.words_in_context) for s in _answered("Kafka stores offsets.", []).sentence_support
    ] == [(3, 0)]
    assert not _answered("", ["Kafka keeps offsets."]).sentence_support
