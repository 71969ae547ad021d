"""The gateway's pure logic: query and feedback validation, deadlines, stream assembly, admission."""

from __future__ import annotations

import time

import grpc
import pytest
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.feedback.v1.events_pb2 import Verdict
from llmops.query.v1.events_pb2 import GenerationChunk, QueryAnswered
from llmops.query.v1.query_pb2 import FailureReason, RetrievalOptions, TokenUsage

from services.gateway import domain
from services.gateway.replies import PendingReplies

LIMITS = domain.QueryLimits(max_question_chars=100, max_top_k=20, max_tokens=256)


def test_a_reasonable_query_is_valid() -> None:
    assert domain.validate_query("What is Kafka?", RetrievalOptions(top_k=5, alpha=0.5), 64, LIMITS) == []


@pytest.mark.parametrize(
    ("question", "retrieval", "max_tokens", "expected"),
    [
        ("   ", RetrievalOptions(), 0, "question is empty"),
        ("x" * 101, RetrievalOptions(), 0, "101 characters, more than the 100 allowed"),
        ("q", RetrievalOptions(top_k=21), 0, "top_k 21 exceeds 20"),
        ("q", RetrievalOptions(alpha=1.5), 0, "alpha 1.5 is outside [0, 1]"),
        ("q", RetrievalOptions(score_threshold=-0.1), 0, "score_threshold"),
        ("q", RetrievalOptions(), 257, "max_tokens 257 exceeds 256"),
    ],
)
def test_bad_queries_are_explained(
    question: str, retrieval: RetrievalOptions, max_tokens: int, expected: str
) -> None:
    problems = domain.validate_query(question, retrieval, max_tokens, LIMITS)
    assert len(problems) == 1 and expected in problems[0]


def test_query_event_carries_the_deadline_and_the_stream_flag() -> None:
    before = time.time()
    event = domain.query_requested(
        tenant_id="t1",
        question="q",
        retrieval=RetrievalOptions(top_k=3),
        prompt_template_id="grounded_qa",
        max_tokens=16,
        timeout_s=2.5,
        stream=True,
    )
    deadline = event.deadline.ToNanoseconds() / 1e9
    assert before + 2.4 < deadline < time.time() + 2.6
    assert event.stream and event.meta.tenant_id == "t1" and event.meta.correlation_id
    assert event.retrieval.top_k == 3 and event.prompt_template_id == "grounded_qa"


def test_failure_reasons_map_to_standard_status_codes() -> None:
    assert domain.status_for(FailureReason.FAILURE_REASON_UNAVAILABLE) is grpc.StatusCode.UNAVAILABLE
    assert (
        domain.status_for(FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED) is grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert (
        domain.status_for(FailureReason.FAILURE_REASON_INVALID_ARGUMENT) is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert domain.status_for(FailureReason.FAILURE_REASON_UNSPECIFIED) is grpc.StatusCode.INTERNAL


def _chunk(sequence: int, text: str) -> GenerationChunk:
    return GenerationChunk(sequence=sequence, text=text)


def test_stream_assembler_passes_pieces_in_order_and_drops_a_restarted_stream() -> None:
    assembler = domain.StreamAssembler()
    pieces = [assembler.accept(c) for c in (_chunk(0, "A"), _chunk(1, "B"), _chunk(0, "A"), _chunk(1, "B"))]
    pieces += [assembler.accept(_chunk(2, "C"))]
    assert pieces == ["A", "B", None, None, "C"]
    assert assembler.complete(QueryAnswered(usage=TokenUsage(completion_tokens=3)))
    assert not assembler.complete(QueryAnswered(usage=TokenUsage(completion_tokens=4)))


def test_feedback_validation() -> None:
    ok = feedback_pb.SubmitFeedbackRequest(correlation_id="c1", verdict=Verdict.VERDICT_UP)
    assert domain.validate_feedback(ok, 100) == []
    empty = feedback_pb.SubmitFeedbackRequest(correlation_id="c1")
    assert "needs a verdict" in domain.validate_feedback(empty, 100)[0]
    bad = feedback_pb.SubmitFeedbackRequest(rating=9, correction="x" * 101)
    problems = " | ".join(domain.validate_feedback(bad, 100))
    assert "correlation_id is required" in problems and "rating 9" in problems and "correction" in problems


def test_feedback_event_belongs_to_the_callers_tenant() -> None:
    request = feedback_pb.SubmitFeedbackRequest(correlation_id="c1", rating=4, correction="better")
    event = domain.feedback_recorded("tenant-a", request)
    assert (event.meta.tenant_id, event.meta.correlation_id, event.rating) == ("tenant-a", "c1", 4)
    assert event.correction == "better" and event.meta.event_id


def test_inflight_limiter_is_per_tenant() -> None:
    limiter = domain.InflightLimiter(2)
    assert limiter.try_acquire("a") and limiter.try_acquire("a")
    assert not limiter.try_acquire("a")
    assert limiter.try_acquire("b")
    limiter.release("a")
    assert limiter.inflight("a") == 1 and limiter.try_acquire("a")


async def test_pending_replies_reach_only_a_waiting_caller() -> None:
    pending = PendingReplies()
    inbox = pending.expect("c1")
    assert pending.deliver("c1", "answer") and not pending.deliver("other", "stray")
    assert await inbox.get() == "answer"
    pending.forget("c1")
    assert not pending.deliver("c1", "late duplicate") and len(pending) == 0
