"""Approved interactions as tenant knowledge: which feedback indexes, replaces or retracts a document."""

from __future__ import annotations

from services.finetune.curation import VERDICT_DOWN, VERDICT_UP, Answered, Feedback
from services.finetune.knowledge import (
    KIND,
    Index,
    Retract,
    interaction_of,
    knowledge_action,
    knowledge_document_id,
)
from shared.documents import content_sha256

ANSWER = Answered(
    tenant_id="acme",
    correlation_id="c1",
    question="How does Kafka store a topic?",
    answer="As partitions of a log.",
    context=("Kafka stores every topic as partitions of an ordered log.",),
    groundedness=0.9,
    occurred_ms=1_000,
)


def feedback(
    event_id: str, at_ms: int, *, verdict: int = 0, rating: int = 0, correction: str = ""
) -> Feedback:
    return Feedback("acme", "c1", event_id, verdict, rating, correction, at_ms)


def test_thumbs_up_indexes_question_and_answer_as_a_tenant_document() -> None:
    action = knowledge_action(ANSWER, [feedback("f1", 2_000, verdict=VERDICT_UP)], min_accept_rating=4)
    assert isinstance(action, Index)
    doc = action.document
    text = doc.content.decode()
    assert ANSWER.question in text and ANSWER.answer in text
    assert doc.document_id == knowledge_document_id("c1") and doc.source_uri == "feedback:c1"
    assert doc.metadata["kind"] == KIND and doc.content_sha256 == content_sha256(doc.content)


def test_a_correction_replaces_the_answer_and_the_latest_feedback_decides() -> None:
    history = [
        feedback("f2", 3_000, correction="As partitions of an ordered, replicated log."),
        feedback("f1", 2_000, verdict=VERDICT_UP),
    ]
    action = knowledge_action(ANSWER, history, min_accept_rating=4)
    assert isinstance(action, Index)
    text = action.document.content.decode()
    assert "ordered, replicated log" in text and ANSWER.answer not in text


def test_rejection_after_approval_retracts_and_rejection_alone_does_nothing() -> None:
    approved_then_rejected = [feedback("f1", 2_000, rating=5), feedback("f2", 3_000, verdict=VERDICT_DOWN)]
    assert knowledge_action(ANSWER, approved_then_rejected, 4) == Retract(knowledge_document_id("c1"))
    assert knowledge_action(ANSWER, [feedback("f1", 2_000, rating=2)], 4) is None


def test_nothing_before_the_answer_arrives_or_without_a_verdict() -> None:
    assert knowledge_action(None, [feedback("f1", 2_000, verdict=VERDICT_UP)], 4) is None
    assert knowledge_action(ANSWER, [], 4) is None
    assert knowledge_action(ANSWER, [feedback("f1", 2_000)], 4) is None  # neither verdict nor rating


def test_the_same_verdict_gives_the_same_document() -> None:
    """Replays re-publish an identical document, which the retriever skips as unchanged."""
    first = knowledge_action(ANSWER, [feedback("f1", 2_000, rating=5)], 4)
    again = knowledge_action(ANSWER, [feedback("f1", 2_000, rating=5)], 4)
    assert isinstance(first, Index) and isinstance(again, Index)
    assert first.document == again.document


def test_a_knowledge_document_maps_back_to_its_interaction_and_no_other_document_does() -> None:
    assert interaction_of(knowledge_document_id("c1")) == "c1"
    assert interaction_of(knowledge_document_id("interaction-x")) == "interaction-x"
    assert interaction_of("kafka.md") is None
    assert interaction_of("interaction-") is None  # the prefix alone names no interaction
