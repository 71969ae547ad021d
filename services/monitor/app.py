"""The monitor process: telemetry from the bus into ClickHouse, quality signals and alerts, ops queries.

It consumes in its own group (llmops.monitor) the query outcomes (answered, failed), feedback, ingest
outcomes, telemetry spans, fine-tune events and query embeddings, in batches (up to max_batch_records,
large fetches): one INSERT per table per batch, committed after it. The tables deduplicate replays
themselves (requests by a version check before the insert, every table by ReplacingMergeTree), so the
sink topics skip the per-event idempotency lookups of the EventGuard; query embeddings, which only feed
the in-memory drift window, keep them. An unreachable ClickHouse raises ClickHouseUnavailable
(transient): the batch stays uncommitted, is redelivered after a pause and lands once ClickHouse is
back. Reads go through the gRPC API (llmops.monitor.v1.MonitorService) because one process owns the
embedded chdb path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from faststream import FastStream
from llmops.feedback.v1.events_pb2 import FeedbackRecorded
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, ModelVersionPromoted, ModelVersionRolledBack
from llmops.ingest.v1.events_pb2 import DocumentDeleted, DocumentIndexed, DocumentIngestFailed
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from llmops.query.v1.events_pb2 import QueryAnswered, QueryEmbedded, QueryFailed
from llmops.telemetry.v1.events_pb2 import TelemetrySpan
from prometheus_client import Counter

from services.monitor import domain, native
from services.monitor.api import MonitorServicer
from services.monitor.quality import QualityMonitor, Sample, Thresholds
from services.monitor.redaction import RedactionPolicy
from services.monitor.settings import MonitorSettings
from services.monitor.store import REQUEST_COLUMNS, Retention, StoreRunner
from shared.bus import Decoded, EventGuard, Records, Rejected, publish_event
from shared.clickhouse import ClickHouse, ClickHouseUnavailable, open_clickhouse
from shared.errors import MalformedEventError
from shared.grpc_server import Registration
from shared.service import FetchSizes, LightTrafficLinger, Route, ServiceRuntime
from shared.topics import (
    DOCUMENT_DELETED,
    DOCUMENT_INDEXED,
    FEEDBACK_RECORDED,
    FINETUNE_JOBS,
    INGEST_FAILED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    QUALITY_ALERTS,
    QUERY_ANSWERED,
    QUERY_EMBEDDED,
    QUERY_FAILED,
    TELEMETRY_SPANS,
)

log = logging.getLogger(__name__)

ROWS_WRITTEN = Counter("llmops_monitor_rows_written_total", "Rows inserted into ClickHouse.", ["table"])
ALERTS_PUBLISHED = Counter("llmops_monitor_quality_alerts_total", "QualityAlerts published.", ["signal"])
ANSWER_BATCHES = Counter(
    "llmops_monitor_answer_batches_total",
    "Batches of answers by how they were stored: fast_path, small (per-event path, below "
    "fast_path_min_records) or refused (per-event path, a record the fast path must not take).",
    ["path"],
)


class _NoIdempotency:
    """An IdempotencyStore that remembers nothing, for consumers whose sink deduplicates itself."""

    async def seen(self, key: str) -> bool:
        return False

    async def mark(self, key: str) -> None:
        return None

    async def close(self) -> None:
        return None


_NO_IDEMPOTENCY = _NoIdempotency()


def thresholds(settings: MonitorSettings) -> Thresholds:
    return Thresholds(
        window_s=settings.quality_window_s,
        min_samples=settings.quality_min_samples,
        groundedness=settings.groundedness_threshold,
        empty_retrieval_rate=settings.empty_retrieval_threshold,
        error_rate=settings.error_rate_threshold,
        embedding_drift=settings.drift_threshold,
        drift_reference_size=settings.drift_reference_size,
        cooldown_s=settings.alert_cooldown_s,
    )


def redaction_policy(settings: MonitorSettings) -> RedactionPolicy:
    salt = settings.redaction_salt_file.read_bytes().strip() if settings.redaction_salt_file else b""
    return RedactionPolicy(settings.redaction_default, settings.redaction_tenants, salt)


def default_open_db(settings: MonitorSettings) -> Callable[[], ClickHouse]:
    password = (
        settings.clickhouse_password_file.read_text().strip() if settings.clickhouse_password_file else ""
    )

    def open_db() -> ClickHouse:
        return open_clickhouse(
            settings.clickhouse_url,
            settings.clickhouse_path,
            username=settings.clickhouse_username,
            password=password,
        )

    return open_db


def rows_of(decoded: Decoded[Any], to_row: Callable[[Any], domain.Row]) -> tuple[list[domain.Row], Rejected]:
    """Rows of the events that convert; an event with an impossible value (a timestamp out of range)
    is rejected on its own, so the rest of its batch is still stored."""
    rows: list[domain.Row] = []
    rejected: Rejected = []
    for record, event in decoded:
        try:
            rows.append(to_row(event))
        except ValueError as exc:
            rejected.append((record, MalformedEventError(f"cannot be stored: {exc}")))
    return rows, rejected


def create_app(
    settings: MonitorSettings | None = None, *, open_db: Callable[[], ClickHouse] | None = None
) -> FastStream:
    settings = settings or MonitorSettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    producer = settings.service_name
    runner = StoreRunner(
        open_db or default_open_db(settings),
        Retention(settings.requests_ttl_days, settings.spans_ttl_days, settings.rollup_ttl_days),
        reconnect_interval_s=settings.reconnect_interval_s,
    )
    policy = redaction_policy(settings)
    quality = QualityMonitor(thresholds(settings))

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        try:
            await runner.open()
        except ClickHouseUnavailable as exc:
            # A server that is down, or an embedded path another process still holds (a monitor being
            # replaced): serve anyway; batches stay uncommitted and reads say UNAVAILABLE until it opens.
            log.warning("ClickHouse unavailable at start; batches wait for it", extra={"error": str(exc)})
        try:
            yield
        finally:
            await runner.close()

    async def publish_breaches(tenants: Iterable[str]) -> None:
        now = time.time()
        for tenant in sorted(set(tenants)):
            for breach in quality.evaluate(tenant, now):
                alert = domain.quality_alert(breach, producer=producer)
                await publish_event(broker, QUALITY_ALERTS.name, alert, key=tenant)
                ALERTS_PUBLISHED.labels(breach.signal).inc()
                log.warning(
                    "quality alert",
                    extra={"tenant_id": tenant, "signal": breach.signal, "detail": breach.detail},
                )

    async def observe_requests(samples: list[tuple[str, Sample]]) -> None:
        """The quality windows take the requests just stored (so replays do not count twice)."""
        ROWS_WRITTEN.labels("requests").inc(len(samples))
        for tenant, sample in samples:
            quality.observe(tenant, sample)
        await publish_breaches(tenant for tenant, _ in samples)

    async def record_requests(rows: list[domain.Row]) -> None:
        async with runner.requests_lock:  # the existence check and the insert go together
            inserted = await runner.run(lambda store: store.insert_requests(rows))
        await observe_requests([(row["tenant_id"], domain.quality_sample(row)) for row in inserted])

    answered_sql = native.AnsweredStatements.build(
        policy, settings.sentence_support_threshold, REQUEST_COLUMNS
    )

    async def on_answered_records(records: Records) -> bool:
        """A large batch of answers stored by the ClickHouse engine from the records as they came
        (services/monitor/native.py); small batches and refused ones take on_answered."""
        if len(records) < settings.fast_path_min_records or any(r.value is None for r in records):
            ANSWER_BATCHES.labels("small").inc()
            return False
        framed = native.frame(record.value for record in records)
        try:
            async with runner.requests_lock:
                samples = await runner.run(
                    lambda store: native.store_answered(store.db, answered_sql, framed)
                )
        except native.Refused as exc:
            ANSWER_BATCHES.labels("refused").inc()
            log.info("batch of answers takes the per-event path", extra={"reason": str(exc)})
            return False
        ANSWER_BATCHES.labels("fast_path").inc()
        await observe_requests(samples)
        return True

    async def on_answered(decoded: Decoded[QueryAnswered]) -> Rejected:
        received = datetime.now(UTC)

        def to_row(event: QueryAnswered) -> domain.Row:
            return domain.scored_answered_row(
                event,
                redaction=policy,
                received_at=received,
                support_threshold=settings.sentence_support_threshold,
            )

        rows, rejected = rows_of(decoded, to_row)
        await record_requests(rows)
        return rejected

    async def on_failed(decoded: Decoded[QueryFailed]) -> Rejected:
        received = datetime.now(UTC)
        rows, rejected = rows_of(
            decoded, lambda event: domain.failed_row(event, redaction=policy, received_at=received)
        )
        await record_requests(rows)
        return rejected

    def inserter(table: str, to_row: Callable[[Any, datetime], domain.Row]) -> Callable[[Decoded[Any]], Any]:
        async def handle(decoded: Decoded[Any]) -> Rejected:
            received = datetime.now(UTC)
            rows, rejected = rows_of(decoded, lambda event: to_row(event, received))
            await runner.run(lambda store: store.insert_rows(table, rows))
            ROWS_WRITTEN.labels(table).inc(len(rows))
            return rejected

        return handle

    async def on_embedded(decoded: Decoded[QueryEmbedded]) -> Rejected:
        for _, event in decoded:
            at = domain.occurred_at(event.meta, datetime.now(UTC)).timestamp()
            quality.observe_embedding(event.meta.tenant_id, list(event.vector), at)
        await publish_breaches(event.meta.tenant_id for _, event in decoded)
        return []

    # The EventGuard rules (dead-lettering, redelivery on transient errors) without the per-event
    # idempotency store: the ClickHouse sinks are idempotent by themselves (module docstring).
    sink_guard = EventGuard(
        service=settings.service_name,
        group_id=settings.group_id,
        dead_letter_topic=settings.kafka.dead_letter_topic,
        store=_NO_IDEMPOTENCY,
    )
    sink_guard.broker = broker

    feedback = inserter("feedback", lambda e, at: domain.feedback_row(e, redaction=policy, received_at=at))
    ingest = inserter("ingest_events", lambda e, at: domain.ingest_row(e, received_at=at))
    finetune = inserter("finetune_events", lambda e, at: domain.finetune_row(e, received_at=at))
    routes: dict[str, Route[Any]] = {
        QUERY_ANSWERED.name: Route(QueryAnswered, on_answered, sink_guard, on_answered_records),
        QUERY_FAILED.name: Route(QueryFailed, on_failed, sink_guard),
        FEEDBACK_RECORDED.name: Route(FeedbackRecorded, feedback, sink_guard),
        DOCUMENT_INDEXED.name: Route(DocumentIndexed, ingest, sink_guard),
        DOCUMENT_DELETED.name: Route(DocumentDeleted, ingest, sink_guard),
        INGEST_FAILED.name: Route(DocumentIngestFailed, ingest, sink_guard),
        TELEMETRY_SPANS.name: Route(
            TelemetrySpan, inserter("spans", lambda e, at: domain.span_row(e, received_at=at)), sink_guard
        ),
        FINETUNE_JOBS.name: Route(FineTuneJobUpdated, finetune, sink_guard),
        MODEL_PROMOTED.name: Route(ModelVersionPromoted, finetune, sink_guard),
        MODEL_ROLLED_BACK.name: Route(ModelVersionRolledBack, finetune, sink_guard),
        # Embeddings only feed the drift window in memory: a replayed one must not count twice.
        QUERY_EMBEDDED.name: Route(QueryEmbedded, on_embedded),
    }
    # One consumer for every topic, with the monitor's fetch sizes (large batches into ClickHouse); the
    # sinks absorb what a redelivered batch had already stored.
    runtime.consume_routes(
        routes,
        max_records=settings.max_batch_records,
        title="monitor:telemetry",
        consumers=settings.consumers,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        record_headers=False,  # handlers read the records' own headers; batch spans link no request
        linger=(
            partial(LightTrafficLinger, settings.light_traffic_linger_s, settings.light_traffic_below_records)
            if settings.light_traffic_linger_s > 0
            else None
        ),
        fetch=FetchSizes(
            fetch_max_bytes=settings.fetch_max_bytes,
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            fetch_min_bytes=settings.fetch_min_bytes,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        ),
    )

    def registrations() -> Iterable[Registration]:
        return [
            (
                pb_grpc.add_MonitorServiceServicer_to_server,
                MonitorServicer(runner),
                pb.DESCRIPTOR.services_by_name["MonitorService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, lifespan=lifespan)
