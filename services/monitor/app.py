"""The monitor process: telemetry from the bus into ClickHouse, quality signals and alerts, ops queries.

It consumes in its own group (llmops.monitor) the query outcomes (answered, failed), feedback, ingest
outcomes, telemetry spans, fine-tune events and query embeddings, in batches: one INSERT per table per
batch, committed after it. An unreachable ClickHouse raises ClickHouseUnavailable (transient): the batch
stays uncommitted, is redelivered after a pause and lands once ClickHouse is back. Reads go through
the gRPC API (llmops.monitor.v1.MonitorService) because one process owns the embedded chdb path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from faststream import FastStream
from google.protobuf.message import Message
from llmops.feedback.v1.events_pb2 import FeedbackRecorded
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, ModelVersionPromoted, ModelVersionRolledBack
from llmops.ingest.v1.events_pb2 import DocumentDeleted, DocumentIndexed, DocumentIngestFailed
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from llmops.query.v1.events_pb2 import QueryAnswered, QueryEmbedded, QueryFailed
from llmops.telemetry.v1.events_pb2 import TelemetrySpan
from prometheus_client import Counter

from services.monitor import domain
from services.monitor.api import MonitorServicer
from services.monitor.quality import QualityMonitor, Thresholds, groundedness
from services.monitor.redaction import RedactionPolicy
from services.monitor.settings import MonitorSettings
from services.monitor.store import Retention, StoreRunner
from shared.bus import Decoded, Rejected, publish_event
from shared.clickhouse import ClickHouse, ClickHouseUnavailable, open_clickhouse
from shared.grpc_server import Registration
from shared.service import ServiceRuntime
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

    async def record_requests(rows: list[domain.Row]) -> None:
        async with runner.requests_lock:  # the existence check and the insert go together
            inserted = await runner.run(lambda store: store.insert_requests(rows))
        ROWS_WRITTEN.labels("requests").inc(len(inserted))
        for row in inserted:  # replays of stored requests do not count twice in the windows
            quality.observe(row["tenant_id"], domain.quality_sample(row))
        await publish_breaches(row["tenant_id"] for row in inserted)

    async def on_answered(decoded: Decoded[QueryAnswered]) -> Rejected:
        received = datetime.now(UTC)
        rows = [
            domain.answered_row(
                event,
                groundedness=groundedness(
                    event.answer,
                    [chunk.text for chunk in event.context],
                    support_threshold=settings.sentence_support_threshold,
                ),
                redaction=policy,
                received_at=received,
            )
            for _, event in decoded
        ]
        await record_requests(rows)
        return []

    async def on_failed(decoded: Decoded[QueryFailed]) -> Rejected:
        received = datetime.now(UTC)
        await record_requests(
            [domain.failed_row(event, redaction=policy, received_at=received) for _, event in decoded]
        )
        return []

    def inserter(table: str, to_row: Callable[[Any, datetime], domain.Row]) -> Callable[[Decoded[Any]], Any]:
        async def handle(decoded: Decoded[Any]) -> Rejected:
            received = datetime.now(UTC)
            rows = [to_row(event, received) for _, event in decoded]
            await runner.run(lambda store: store.insert_rows(table, rows))
            ROWS_WRITTEN.labels(table).inc(len(rows))
            return []

        return handle

    async def on_embedded(decoded: Decoded[QueryEmbedded]) -> Rejected:
        for _, event in decoded:
            at = domain.occurred_at(event.meta, datetime.now(UTC)).timestamp()
            quality.observe_embedding(event.meta.tenant_id, list(event.vector), at)
        await publish_breaches(event.meta.tenant_id for _, event in decoded)
        return []

    batch = settings.max_batch_records
    subscriptions: list[tuple[str, type[Message], Callable[[Decoded[Any]], Any], str]] = [
        (QUERY_ANSWERED.name, QueryAnswered, on_answered, "monitor:answered"),
        (QUERY_FAILED.name, QueryFailed, on_failed, "monitor:failed"),
        (
            FEEDBACK_RECORDED.name,
            FeedbackRecorded,
            inserter("feedback", lambda e, at: domain.feedback_row(e, redaction=policy, received_at=at)),
            "monitor:feedback",
        ),
        (
            DOCUMENT_INDEXED.name,
            DocumentIndexed,
            inserter("ingest_events", lambda e, at: domain.ingest_row(e, received_at=at)),
            "monitor:ingest-indexed",
        ),
        (
            DOCUMENT_DELETED.name,
            DocumentDeleted,
            inserter("ingest_events", lambda e, at: domain.ingest_row(e, received_at=at)),
            "monitor:ingest-deleted",
        ),
        (
            INGEST_FAILED.name,
            DocumentIngestFailed,
            inserter("ingest_events", lambda e, at: domain.ingest_row(e, received_at=at)),
            "monitor:ingest-failed",
        ),
        (
            TELEMETRY_SPANS.name,
            TelemetrySpan,
            inserter("spans", lambda e, at: domain.span_row(e, received_at=at)),
            "monitor:spans",
        ),
        (
            FINETUNE_JOBS.name,
            FineTuneJobUpdated,
            inserter("finetune_events", lambda e, at: domain.finetune_row(e, received_at=at)),
            "monitor:finetune-jobs",
        ),
        (
            MODEL_PROMOTED.name,
            ModelVersionPromoted,
            inserter("finetune_events", lambda e, at: domain.finetune_row(e, received_at=at)),
            "monitor:model-promoted",
        ),
        (
            MODEL_ROLLED_BACK.name,
            ModelVersionRolledBack,
            inserter("finetune_events", lambda e, at: domain.finetune_row(e, received_at=at)),
            "monitor:model-rolled-back",
        ),
        (QUERY_EMBEDDED.name, QueryEmbedded, on_embedded, "monitor:query-embedded"),
    ]
    for topic, message_type, handle, title in subscriptions:
        runtime.consume_batches(topic, message_type, handle, max_records=batch, title=title)

    def registrations() -> Iterable[Registration]:
        return [
            (
                pb_grpc.add_MonitorServiceServicer_to_server,
                MonitorServicer(runner),
                pb.DESCRIPTOR.services_by_name["MonitorService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, lifespan=lifespan)
