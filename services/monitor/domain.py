"""Pure logic of the monitor: the rows it stores for each event and the alerts it publishes.

One wide row per request, keyed by its correlation id: a QueryAnswered or a QueryFailed becomes a
`requests` row (question and answer redacted per tenant, model and template versions, tokens,
per-stage milliseconds, retrieved chunk ids and scores, groundedness, status, error). When a request
has several outcome events (a replay, a re-published answer, an answer and a late failure) the row with
the highest `version` wins: an answer outranks a failure, then the later event.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from llmops.common.v1.event_meta_pb2 import EventMeta
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.finetune.v1.events_pb2 import (
    FineTuneJobUpdated,
    JobState,
    JobTrigger,
    ModelVersionPromoted,
    ModelVersionRolledBack,
)
from llmops.ingest.v1.events_pb2 import DocumentDeleted, DocumentIndexed, DocumentIngestFailed
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed
from llmops.query.v1.query_pb2 import FailureReason, StageTiming
from llmops.telemetry.v1.events_pb2 import AlertSeverity, QualityAlert, SpanStatus, TelemetrySpan

from services.monitor.quality import Breach, Sample, groundedness, judge_support
from services.monitor.redaction import RedactionPolicy
from shared.events import new_meta

Row = dict[str, Any]

ANSWERED = "answered"
FAILED = "failed"
# Stages that lie inside another stage and are not added to the total ("first_token" is in "generate").
NESTED_STAGES = frozenset({"first_token"})
_STATUS_RANK = {FAILED: 1, ANSWERED: 2}
_MS_PER_RANK = 10**14  # > any epoch millisecond until the year 5138


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NANOS = 999_999_999


def occurred_at(meta: EventMeta, received_at: datetime) -> datetime:
    """The event's time in UTC; the receipt time when the producer left it unset."""
    ts: Timestamp = meta.occurred_at
    seconds, nanos = ts.seconds, ts.nanos
    if seconds == 0 and nanos == 0:
        return received_at.astimezone(UTC)
    if 0 <= nanos <= _MAX_NANOS:  # Timestamp.ToDatetime(tzinfo=UTC) without its Python-level checks
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    return ts.ToDatetime(tzinfo=UTC)  # raises on an invalid timestamp


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def row_version(status: str, moment: datetime) -> int:
    """ReplacingMergeTree version of a request row: an answer outranks a failure, then later wins."""
    return _STATUS_RANK[status] * _MS_PER_RANK + epoch_ms(moment)


def stage_ms(timings: Iterable[StageTiming]) -> dict[str, float]:
    """Milliseconds per stage; a stage reported twice is summed."""
    result: dict[str, float] = {}
    for timing in timings:
        stage = timing.stage  # each read of a protobuf field builds a new str
        if stage:
            result[stage] = result.get(stage, 0.0) + timing.duration_ms  # a float already
    return result


def total_ms(stages: dict[str, float]) -> float:
    return sum(ms for stage, ms in stages.items() if stage not in NESTED_STAGES)


def answered_row(
    event: QueryAnswered,
    *,
    groundedness: float | None,
    redaction: RedactionPolicy,
    received_at: datetime,
) -> Row:
    meta = event.meta
    tenant = meta.tenant_id
    moment = occurred_at(meta, received_at)
    stages = stage_ms(event.timings)
    mode = redaction.mode(tenant)
    chunk_ids: list[str] = []
    chunk_scores: list[float] = []
    for chunk in event.context:  # one pass: each chunk's message wrapper is built once
        chunk_ids.append(chunk.chunk_id)
        chunk_scores.append(chunk.score)  # float32 in the event, a Python float here
    return {
        "correlation_id": meta.correlation_id,
        "event_id": meta.event_id,
        "tenant_id": tenant,
        "occurred_at": moment,
        "version": row_version(ANSWERED, moment),
        "status": ANSWERED,
        "question": event.question if mode == "store" else redaction.apply(tenant, event.question),
        "answer": event.answer if mode == "store" else redaction.apply(tenant, event.answer),
        "redaction": mode,
        "model_name": event.model_name,
        "model_version": event.model_version,
        "prompt_template_id": event.prompt_template_id,
        "prompt_template_version": event.prompt_template_version,
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "stage_ms": stages,
        "total_ms": total_ms(stages),
        "chunk_ids": chunk_ids,
        "chunk_scores": chunk_scores,
        "cited_chunk_ids": [c.chunk_id for c in event.citations],
        "groundedness": groundedness,
        "error_reason": "",
        "error_detail": "",
        "failed_stage": "",
    }


def scored_answered_row(
    event: QueryAnswered, *, redaction: RedactionPolicy, received_at: datetime, support_threshold: float
) -> Row:
    """answered_row with the answer's groundedness against its retrieved chunks: the per-event path's
    row of an answer. The sentence support the generator sent is judged as it came; an answer without
    it is tokenised here (quality.groundedness)."""
    if event.sentence_support:
        support = [(s.content_words, s.words_in_context) for s in event.sentence_support]
        score = judge_support(support, support_threshold=support_threshold).score
    else:
        score = groundedness(
            event.answer, [chunk.text for chunk in event.context], support_threshold=support_threshold
        )
    return answered_row(event, groundedness=score, redaction=redaction, received_at=received_at)


def failed_row(event: QueryFailed, *, redaction: RedactionPolicy, received_at: datetime) -> Row:
    tenant = event.meta.tenant_id
    moment = occurred_at(event.meta, received_at)
    return {
        "correlation_id": event.meta.correlation_id,
        "event_id": event.meta.event_id,
        "tenant_id": tenant,
        "occurred_at": moment,
        "version": row_version(FAILED, moment),
        "status": FAILED,
        "question": "",
        "answer": "",
        "redaction": redaction.mode(tenant),
        "model_name": event.model_name,
        "model_version": event.model_version,
        "prompt_template_id": "",
        "prompt_template_version": "",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "stage_ms": {},
        "total_ms": 0.0,
        "chunk_ids": [],
        "chunk_scores": [],
        "cited_chunk_ids": [],
        "groundedness": None,
        "error_reason": FailureReason.Name(event.reason).removeprefix("FAILURE_REASON_")
        if event.reason in FailureReason.values()
        else str(event.reason),
        "error_detail": event.detail,
        "failed_stage": event.failed_stage,
    }


def quality_sample(row: Row) -> Sample:
    """What the quality window needs of a stored request row."""
    return Sample(
        at=row["occurred_at"].timestamp(),
        failed=row["status"] == FAILED,
        groundedness=row["groundedness"],
        empty_retrieval=row["status"] == ANSWERED and not row["chunk_ids"],
    )


def newest_per_request(rows: Iterable[Row]) -> list[Row]:
    """One row per (tenant, correlation id): the highest version (what ReplacingMergeTree keeps)."""
    best: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row["tenant_id"], row["correlation_id"])
        if key not in best or row["version"] > best[key]["version"]:
            best[key] = row
    return list(best.values())


def feedback_row(event: FeedbackRecorded, *, redaction: RedactionPolicy, received_at: datetime) -> Row:
    tenant = event.meta.tenant_id
    verdict = {Verdict.VERDICT_UP: "up", Verdict.VERDICT_DOWN: "down"}.get(event.verdict, "")
    return {
        "event_id": event.meta.event_id,
        "correlation_id": event.meta.correlation_id,
        "tenant_id": tenant,
        "occurred_at": occurred_at(event.meta, received_at),
        "verdict": verdict,
        "rating": min(event.rating, 255),
        "has_correction": int(bool(event.correction)),
        "correction": redaction.apply(tenant, event.correction),
        "comment": redaction.apply(tenant, event.comment),
        "redaction": redaction.mode(tenant),
    }


def ingest_row(
    event: DocumentIndexed | DocumentDeleted | DocumentIngestFailed, *, received_at: datetime
) -> Row:
    row: Row = {
        "event_id": event.meta.event_id,
        "correlation_id": event.meta.correlation_id,
        "tenant_id": event.meta.tenant_id,
        "occurred_at": occurred_at(event.meta, received_at),
        "document_id": event.document_id,
        "kind": "",
        "chunk_count": 0,
        "unchanged": 0,
        "reason": "",
        "failed_stage": "",
    }
    if isinstance(event, DocumentIndexed):
        row.update(kind="indexed", chunk_count=event.chunk_count, unchanged=int(event.unchanged))
    elif isinstance(event, DocumentDeleted):
        row.update(kind="deleted", chunk_count=event.chunk_count)
    else:
        row.update(kind="failed", reason=event.reason, failed_stage=event.failed_stage)
    return row


def span_row(event: TelemetrySpan, *, received_at: datetime) -> Row:
    moment = occurred_at(event.meta, received_at)
    started = event.started_at.ToDatetime(tzinfo=UTC) if event.HasField("started_at") else moment
    status = {SpanStatus.SPAN_STATUS_OK: "ok", SpanStatus.SPAN_STATUS_ERROR: "error"}.get(event.status, "")
    return {
        "event_id": event.meta.event_id,
        "correlation_id": event.meta.correlation_id,
        "tenant_id": event.meta.tenant_id,
        "occurred_at": moment,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "stage": event.stage,
        "started_at": started,
        "duration_ms": float(event.duration_ms),
        "status": status,
        "error": event.error,
        "metrics": dict(event.metrics),
        "attributes": dict(event.attributes),
    }


def finetune_row(
    event: FineTuneJobUpdated | ModelVersionPromoted | ModelVersionRolledBack, *, received_at: datetime
) -> Row:
    row: Row = {
        "event_id": event.meta.event_id,
        "correlation_id": event.meta.correlation_id,
        "tenant_id": event.meta.tenant_id,
        "occurred_at": occurred_at(event.meta, received_at),
        "kind": "",
        "job_id": "",
        "state": "",
        "trigger": "",
        "base_model": "",
        "dataset_version": "",
        "model_name": "",
        "model_version": "",
        "previous_version": "",
        "traffic_share": 0.0,
        "parameters": {},
        "metrics": {},
        "artifact_uri": "",
        "reason": "",
    }
    if isinstance(event, FineTuneJobUpdated):
        row.update(
            kind="job",
            job_id=event.job_id,
            state=JobState.Name(event.state).removeprefix("JOB_STATE_").lower()
            if event.state in JobState.values()
            else str(event.state),
            trigger=JobTrigger.Name(event.trigger).removeprefix("JOB_TRIGGER_").lower()
            if event.trigger in JobTrigger.values()
            else str(event.trigger),
            base_model=event.base_model,
            dataset_version=event.dataset_version,
            parameters=dict(event.parameters),
            metrics=dict(event.metrics),
            artifact_uri=event.artifact_uri,
            reason=event.error,
        )
    elif isinstance(event, ModelVersionPromoted):
        row.update(
            kind="promoted",
            job_id=event.job_id,
            model_name=event.model_name,
            model_version=event.model_version,
            previous_version=event.previous_version,
            traffic_share=float(event.traffic_share),
            metrics=dict(event.eval_metrics),
        )
    else:
        row.update(
            kind="rolled_back",
            model_name=event.model_name,
            model_version=event.model_version,
            previous_version=event.restored_version,
            reason=event.reason,
        )
    return row


def _timestamp(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch_s * 1e9))
    return ts


def quality_alert(breach: Breach, *, producer: str) -> QualityAlert:
    return QualityAlert(
        meta=new_meta(tenant_id=breach.tenant_id, producer=producer),
        signal=breach.signal,
        observed=breach.observed,
        threshold=breach.threshold,
        severity=AlertSeverity.ALERT_SEVERITY_CRITICAL
        if breach.severity == "critical"
        else AlertSeverity.ALERT_SEVERITY_WARNING,
        window_start=_timestamp(breach.window_start),
        window_end=_timestamp(breach.window_end),
        detail=breach.detail,
    )
