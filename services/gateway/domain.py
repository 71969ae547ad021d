"""The gateway's pure logic: validating calls, building events, mapping replies to gRPC."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.query.v1.events_pb2 import GenerationChunk, QueryAnswered, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason, RetrievalOptions

from shared.events import new_meta

PRODUCER = "gateway"

STATUS_BY_REASON: dict[int, grpc.StatusCode] = {
    FailureReason.FAILURE_REASON_INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    FailureReason.FAILURE_REASON_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    FailureReason.FAILURE_REASON_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    FailureReason.FAILURE_REASON_INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_for(reason: int) -> grpc.StatusCode:
    """The gRPC status a caller gets for a QueryFailed reason."""
    return STATUS_BY_REASON.get(reason, grpc.StatusCode.INTERNAL)


@dataclass(frozen=True)
class QueryLimits:
    max_question_chars: int
    max_top_k: int
    max_tokens: int
    max_metadata_filters: int = 16


def validate_query(
    question: str, retrieval: RetrievalOptions, max_tokens: int, limits: QueryLimits
) -> list[str]:
    """What is wrong with a query request; empty when it may go on the bus."""
    problems = []
    if not question.strip():
        problems.append("question is empty")
    elif len(question) > limits.max_question_chars:
        problems.append(
            f"question has {len(question)} characters, more than the {limits.max_question_chars} allowed"
        )
    if retrieval.top_k > limits.max_top_k:
        problems.append(f"retrieval.top_k {retrieval.top_k} exceeds {limits.max_top_k}")
    if retrieval.HasField("alpha") and not 0.0 <= retrieval.alpha <= 1.0:
        problems.append(f"retrieval.alpha {retrieval.alpha} is outside [0, 1]")
    if not 0.0 <= retrieval.score_threshold <= 1.0:
        problems.append(f"retrieval.score_threshold {retrieval.score_threshold} is outside [0, 1]")
    if len(retrieval.metadata_filter) > limits.max_metadata_filters:
        problems.append(f"more than {limits.max_metadata_filters} metadata filters")
    if max_tokens > limits.max_tokens:
        problems.append(f"max_tokens {max_tokens} exceeds {limits.max_tokens}")
    return problems


def query_requested(
    *,
    tenant_id: str,
    question: str,
    retrieval: RetrievalOptions,
    prompt_template_id: str,
    max_tokens: int,
    timeout_s: float,
    stream: bool,
    reply_topic: str = "",
) -> QueryRequested:
    """The event that starts a query; its deadline is `timeout_s` from now, as every stage sees it."""
    deadline = Timestamp()
    deadline.FromNanoseconds(time.time_ns() + int(timeout_s * 1e9))
    return QueryRequested(
        meta=new_meta(tenant_id=tenant_id, producer=PRODUCER),
        question=question,
        retrieval=retrieval,
        reply_topic=reply_topic,
        deadline=deadline,
        prompt_template_id=prompt_template_id,
        max_tokens=max_tokens,
        stream=stream,
    )


def query_response(answered: QueryAnswered) -> query_pb.QueryResponse:
    return query_pb.QueryResponse(
        correlation_id=answered.meta.correlation_id,
        answer=answered.answer,
        citations=answered.citations,
        context=answered.context,
        usage=answered.usage,
        model_name=answered.model_name,
        model_version=answered.model_version,
        timings=answered.timings,
    )


class StreamAssembler:
    """Orders a stream's chunks and drops repeats.

    Chunks are keyed by correlation id, so they arrive in order on one partition; a generator that
    restarts mid-answer streams again from sequence 0, and those repeats are dropped so the caller
    sees each piece once.
    """

    def __init__(self) -> None:
        self.next_sequence = 0

    def accept(self, chunk: GenerationChunk) -> str | None:
        if chunk.sequence != self.next_sequence:
            return None
        self.next_sequence += 1
        return chunk.text

    def complete(self, answered: QueryAnswered) -> bool:
        """True once every piece of the final answer was streamed (one chunk per completion token)."""
        return self.next_sequence >= answered.usage.completion_tokens


def validate_feedback(request: feedback_pb.SubmitFeedbackRequest, max_text_chars: int) -> list[str]:
    problems = []
    if not request.correlation_id:
        problems.append("correlation_id is required")
    if request.rating > 5:
        problems.append(f"rating {request.rating} is outside 1-5 (0 means none)")
    if request.verdict not in (Verdict.VERDICT_UNSPECIFIED, Verdict.VERDICT_UP, Verdict.VERDICT_DOWN):
        problems.append(f"unknown verdict {request.verdict}")
    if not (request.verdict or request.rating or request.correction or request.comment):
        problems.append("feedback needs a verdict, a rating, a correction or a comment")
    for name in ("correction", "comment"):
        if len(getattr(request, name)) > max_text_chars:
            problems.append(f"{name} is longer than {max_text_chars} characters")
    return problems


def feedback_recorded(tenant_id: str, request: feedback_pb.SubmitFeedbackRequest) -> FeedbackRecorded:
    """Feedback carries the caller's tenant: it can only ever attach to that tenant's requests."""
    return FeedbackRecorded(
        meta=new_meta(tenant_id=tenant_id, producer=PRODUCER, correlation_id=request.correlation_id),
        verdict=request.verdict,
        rating=request.rating,
        correction=request.correction,
        comment=request.comment,
    )


class InflightLimiter:
    """At most `limit` queries in flight per tenant in this gateway replica (RESOURCE_EXHAUSTED past it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._inflight: defaultdict[str, int] = defaultdict(int)

    def try_acquire(self, tenant_id: str) -> bool:
        if self._inflight[tenant_id] >= self.limit:
            return False
        self._inflight[tenant_id] += 1
        return True

    def release(self, tenant_id: str) -> None:
        self._inflight[tenant_id] -= 1
        if self._inflight[tenant_id] <= 0:
            del self._inflight[tenant_id]

    def inflight(self, tenant_id: str) -> int:
        return self._inflight.get(tenant_id, 0)
