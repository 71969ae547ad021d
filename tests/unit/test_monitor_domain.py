"""The monitor's rows per event, request versions, redaction and alert events (pure logic)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, JobState, ModelVersionRolledBack
from llmops.ingest.v1.events_pb2 import DocumentIndexed, DocumentIngestFailed
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed
from llmops.query.v1.query_pb2 import Citation, FailureReason, RetrievedChunk, StageTiming, TokenUsage
from llmops.telemetry.v1.events_pb2 import AlertSeverity, SpanStatus, TelemetrySpan

from services.monitor import domain
from services.monitor.quality import Breach
from services.monitor.redaction import RedactionPolicy
from shared.events import new_meta

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STORE = RedactionPolicy()


def answered(tenant: str = "acme", correlation_id: str | None = None) -> QueryAnswered:
    return QueryAnswered(
        meta=new_meta(tenant_id=tenant, producer="generator", correlation_id=correlation_id),
        question="How does Kafka store a topic?",
        answer="Kafka stores a topic as partitions [1].",
        citations=[Citation(marker=1, chunk_id="c1", document_id="kafka.md")],
        context=[
            RetrievedChunk(chunk_id="c1", document_id="kafka.md", text="Kafka stores...", score=0.9),
            RetrievedChunk(chunk_id="c2", document_id="bread.md", text="Bread...", score=0.25),
        ],
        usage=TokenUsage(prompt_tokens=120, completion_tokens=9),
        model_name="tiny_llm",
        model_version="2",
        prompt_template_id="grounded_qa",
        prompt_template_version="v2",
        timings=[
            StageTiming(stage="embed", duration_ms=4.0),
            StageTiming(stage="retrieve", duration_ms=11.0),
            StageTiming(stage="queue", duration_ms=2.0),
            StageTiming(stage="first_token", duration_ms=30.0),
            StageTiming(stage="generate", duration_ms=80.0),
        ],
    )


def test_answered_row_is_the_wide_request_row() -> None:
    event = answered()
    row = domain.answered_row(event, groundedness=0.75, redaction=STORE, received_at=NOW)
    assert row["correlation_id"] == event.meta.correlation_id
    assert row["event_id"] == event.meta.event_id
    assert row["tenant_id"] == "acme"
    assert row["status"] == "answered"
    assert row["occurred_at"] == event.meta.occurred_at.ToDatetime(tzinfo=UTC)
    assert (row["question"], row["answer"]) == (event.question, event.answer)
    assert (row["model_name"], row["model_version"]) == ("tiny_llm", "2")
    assert (row["prompt_template_id"], row["prompt_template_version"]) == ("grounded_qa", "v2")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (120, 9)
    assert row["stage_ms"] == {
        "embed": 4.0,
        "retrieve": 11.0,
        "queue": 2.0,
        "first_token": 30.0,
        "generate": 80.0,
    }
    assert row["total_ms"] == 97.0  # first_token lies inside generate
    assert row["chunk_ids"] == ["c1", "c2"]
    assert row["chunk_scores"] == [pytest.approx(0.9), pytest.approx(0.25)]
    assert row["cited_chunk_ids"] == ["c1"]
    assert row["groundedness"] == 0.75
    assert set(row) >= {"error_reason", "error_detail", "failed_stage"}


def test_failed_row_names_the_reason_and_stage() -> None:
    event = QueryFailed(
        meta=new_meta(tenant_id="acme", producer="retriever"),
        reason=FailureReason.FAILURE_REASON_UNAVAILABLE,
        detail="Weaviate down",
        failed_stage="retriever",
    )
    row = domain.failed_row(event, redaction=STORE, received_at=NOW)
    assert (row["status"], row["error_reason"], row["error_detail"], row["failed_stage"]) == (
        "failed",
        "UNAVAILABLE",
        "Weaviate down",
        "retriever",
    )
    assert row["groundedness"] is None
    assert (row["model_name"], row["model_version"]) == ("", "")  # failed before a model was chosen
    assert domain.quality_sample(row).failed


def test_failed_row_keeps_the_model_version_routing_chose() -> None:
    event = QueryFailed(
        meta=new_meta(tenant_id="acme", producer="generator"),
        reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
        detail="generation on gemma unavailable after retries",
        failed_stage="generator",
        model_name="gemma",
        model_version="2",
    )
    row = domain.failed_row(event, redaction=STORE, received_at=NOW)
    assert (row["status"], row["model_name"], row["model_version"]) == ("failed", "gemma", "2")
    assert row["error_reason"] == "DEADLINE_EXCEEDED"


def test_missing_event_time_falls_back_to_receipt() -> None:
    event = answered()
    event.meta.ClearField("occurred_at")
    row = domain.answered_row(event, groundedness=None, redaction=STORE, received_at=NOW)
    assert row["occurred_at"] == NOW


def test_an_answer_outranks_a_failure_and_the_later_event_wins() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert domain.row_version("answered", early) > domain.row_version("failed", late)
    assert domain.row_version("answered", late) > domain.row_version("answered", early)
    rows = [
        {"tenant_id": "t", "correlation_id": "c", "version": 5, "n": 1},
        {"tenant_id": "t", "correlation_id": "c", "version": 9, "n": 2},
        {"tenant_id": "t", "correlation_id": "c", "version": 7, "n": 3},
        {"tenant_id": "u", "correlation_id": "c", "version": 1, "n": 4},
    ]
    assert sorted(r["n"] for r in domain.newest_per_request(rows)) == [2, 4]


def test_empty_retrieval_is_an_answer_without_context() -> None:
    event = answered()
    del event.context[:]
    row = domain.answered_row(event, groundedness=0.0, redaction=STORE, received_at=NOW)
    sample = domain.quality_sample(row)
    assert sample.empty_retrieval and not sample.failed and sample.groundedness == 0.0


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("store", "How does Kafka store a topic?"),
        ("hash", "sha256:" + hashlib.sha256(b"How does Kafka store a topic?").hexdigest()),
        ("drop", ""),
    ],
)
def test_redaction_per_tenant_applies_to_questions_and_answers(mode: str, expected: str) -> None:
    policy = RedactionPolicy("store", {"acme": mode})  # type: ignore[dict-item]
    row = domain.answered_row(answered(), groundedness=1.0, redaction=policy, received_at=NOW)
    assert row["question"] == expected
    assert row["redaction"] == mode
    other = domain.answered_row(answered("other"), groundedness=1.0, redaction=policy, received_at=NOW)
    assert other["question"] == "How does Kafka store a topic?"  # the default for other tenants


def test_salted_hash_differs_from_plain_and_is_stable() -> None:
    plain = RedactionPolicy("hash")
    salted = RedactionPolicy("hash", salt=b"pepper")
    assert salted.apply("t", "secret") != plain.apply("t", "secret")
    assert salted.apply("t", "secret") == salted.apply("t", "secret")
    assert plain.apply("t", "") == ""
    with pytest.raises(ValueError, match="unknown redaction mode"):
        RedactionPolicy("encrypt")  # type: ignore[arg-type]


def test_feedback_row_keeps_the_correction_flag_when_text_is_dropped() -> None:
    event = FeedbackRecorded(
        meta=new_meta(tenant_id="bank", producer="gateway"),
        verdict=Verdict.VERDICT_DOWN,
        rating=2,
        correction="The right answer",
        comment="wrong",
    )
    row = domain.feedback_row(event, redaction=RedactionPolicy("drop"), received_at=NOW)
    assert (row["verdict"], row["rating"], row["has_correction"]) == ("down", 2, 1)
    assert (row["correction"], row["comment"]) == ("", "")


def test_ingest_span_and_finetune_rows() -> None:
    indexed = DocumentIndexed(meta=new_meta(tenant_id="t", producer="r"), document_id="d", chunk_count=3)
    assert domain.ingest_row(indexed, received_at=NOW)["kind"] == "indexed"
    failed = DocumentIngestFailed(meta=new_meta(tenant_id="t", producer="e"), document_id="d", reason="empty")
    assert (
        domain.ingest_row(failed, received_at=NOW)["kind"],
        domain.ingest_row(failed, received_at=NOW)["reason"],
    ) == (
        "failed",
        "empty",
    )
    span = TelemetrySpan(
        meta=new_meta(tenant_id="t", producer="g"),
        stage="generate",
        duration_ms=12.5,
        status=SpanStatus.SPAN_STATUS_ERROR,
        metrics={"tokens": 3.0},
    )
    row = domain.span_row(span, received_at=NOW)
    assert (row["stage"], row["status"], row["metrics"]) == ("generate", "error", {"tokens": 3.0})
    job = FineTuneJobUpdated(
        meta=new_meta(tenant_id="t", producer="f"), job_id="j1", state=JobState.JOB_STATE_RUNNING
    )
    assert (
        domain.finetune_row(job, received_at=NOW)["kind"],
        domain.finetune_row(job, received_at=NOW)["state"],
    ) == (
        "job",
        "running",
    )
    back = ModelVersionRolledBack(
        meta=new_meta(tenant_id="t", producer="f"), model_name="m", model_version="3", restored_version="2"
    )
    assert domain.finetune_row(back, received_at=NOW)["previous_version"] == "2"


def test_quality_alert_event() -> None:
    breach = Breach("acme", "groundedness", 0.1, 0.5, "critical", 1000.0, 1300.0, 25)
    alert = domain.quality_alert(breach, producer="monitor")
    assert alert.meta.tenant_id == "acme"
    assert alert.meta.producer == "monitor"
    assert (alert.signal, alert.observed, alert.threshold) == ("groundedness", 0.1, 0.5)
    assert alert.severity == AlertSeverity.ALERT_SEVERITY_CRITICAL
    assert (alert.window_start.seconds, alert.window_end.seconds) == (1000, 1300)
    assert "25 samples" in alert.detail
