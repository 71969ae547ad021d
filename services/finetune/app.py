"""The finetune process: curation inputs from the bus, trigger policies, jobs, lifecycle events, ops API.

It consumes, in its own group (llmops.finetune), the answered queries, the feedback and the monitor's
quality alerts, and keeps what curation needs in its SQLite store (PII-scrubbed; groundedness computed
with the monitor's function on arrival). The scheduler (`services.finetune.scheduler`) evaluates the
trigger policies every tick, curates dataset versions, runs jobs through the runner (a local training
subprocess by default) and publishes FineTuneJobUpdated on llmops.finetune.jobs.v1. Events of tenants
this deployment does not serve are skipped (counted). gRPC: llmops.finetune.v1.FineTuneService.

With promotion enabled (`services.finetune.promotion`), the service writes version 1 of the serving
model (the base) into Triton's writable repository at start and loads it; a job the gate passes becomes
the next version, loaded through Triton's model-control API and announced with ModelVersionPromoted
(canary share first); the canary watch compares it with stable from the monitor's ops API and
publishes ModelVersionRolledBack or widens it to the full rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from faststream import FastStream
from google.protobuf.message import Message
from llmops.feedback.v1.events_pb2 import FeedbackRecorded
from llmops.finetune.v1 import finetune_service_pb2 as pb
from llmops.finetune.v1 import finetune_service_pb2_grpc as pb_grpc
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated
from llmops.ingest.v1.events_pb2 import DocumentDeleteRequested, DocumentIndexed, DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryAnswered
from llmops.telemetry.v1.events_pb2 import QualityAlert
from prometheus_client import Counter

from services.finetune.api import FineTuneServicer
from services.finetune.curation import Answered, Embed, Feedback
from services.finetune.knowledge import Index, Retract, interaction_of, knowledge_action
from services.finetune.pii import scrub
from services.finetune.promotion import ModelRepository, MonitorClient, Promoter, TritonModelControl
from services.finetune.runner import LocalProcessRunner
from services.finetune.scheduler import Scheduler
from services.finetune.settings import FinetuneSettings
from services.finetune.store import FinetuneStore
from services.finetune.triggers import PendingAlert
from services.monitor.quality import groundedness
from shared.bus import Decoded, Rejected, publish_event
from shared.errors import PermanentError
from shared.events import new_meta
from shared.grpc_server import Registration
from shared.service import Route, ServiceRuntime
from shared.topics import (
    DELETE_REQUESTED,
    DOCUMENT_INDEXED,
    FEEDBACK_RECORDED,
    FINETUNE_JOBS,
    INGEST_REQUESTED,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    QUALITY_ALERTS,
    QUERY_ANSWERED,
)

log = logging.getLogger(__name__)

EVENTS = Counter(
    "llmops_finetune_events_total", "Events the finetune consumed, by kind and outcome.", ["kind", "outcome"]
)

KNOWLEDGE = Counter(
    "llmops_finetune_knowledge_documents_total",
    "Approved interactions published as tenant documents, or retracted.",
    ["action"],
)


def answered_record(event: QueryAnswered, *, max_context_chunks: int, support_threshold: float) -> Answered:
    context = [chunk.text for chunk in event.context]
    score = groundedness(event.answer, context, support_threshold=support_threshold)
    return Answered(
        tenant_id=event.meta.tenant_id,
        correlation_id=event.meta.correlation_id,
        question=scrub(event.question),
        answer=scrub(event.answer),
        context=tuple(scrub(text) for text in context[:max_context_chunks]),
        groundedness=score,
        occurred_ms=event.meta.occurred_at.ToMilliseconds(),
        model_name=event.model_name,
        model_version=event.model_version,
    )


def feedback_record(event: FeedbackRecorded) -> Feedback:
    return Feedback(
        tenant_id=event.meta.tenant_id,
        correlation_id=event.meta.correlation_id,
        event_id=event.meta.event_id,
        verdict=int(event.verdict),
        rating=int(event.rating),
        correction=scrub(event.correction),
        occurred_ms=event.meta.occurred_at.ToMilliseconds(),
    )


def embed_factory(settings: FinetuneSettings) -> Embed | None:
    if settings.dedup_backend == "none":
        return None
    from services.embedder.embedding import load_embedder

    embedder = load_embedder(settings.dedup_backend)
    return embedder.embed


def create_app(settings: FinetuneSettings | None = None) -> FastStream:
    settings = settings or FinetuneSettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    tenants = settings.tenants.registry()
    store = FinetuneStore(settings.store_path)

    async def publish(event: FineTuneJobUpdated) -> None:
        await publish_event(broker, FINETUNE_JOBS.name, event, key=event.job_id)

    async def publish_model_event(topic: str, event: Message, key: str) -> None:
        await publish_event(broker, topic, event, key=key)

    promoter = (
        Promoter(
            store,
            ModelRepository(settings.model_repository, settings.serving_model),
            TritonModelControl(settings.triton.grpc_url, load_timeout_s=settings.model_load_timeout_s),
            MonitorClient(settings.monitor_grpc_url),
            publish_model_event,
            models_dir=settings.models_dir,
            canary_stages=settings.canary_stages,
            scope=settings.rollout_scope,
            policy=settings.canary_policy(),
            producer=settings.service_name,
            promoted_topic=MODEL_PROMOTED.name,
            rolled_back_topic=MODEL_ROLLED_BACK.name,
            retire_grace_s=settings.retire_grace_s,
            threads=settings.train_threads,
        )
        if settings.promotion_enabled
        else None
    )
    scheduler = Scheduler(
        settings,
        store,
        LocalProcessRunner(settings.jobs_dir, timeout_s=settings.job_timeout_s),
        publish,
        embed_factory=lambda: embed_factory(settings),
        on_succeeded=promoter.on_succeeded if promoter else None,
        adapter_of=promoter.current_adapter if promoter else None,
    )
    promotion_tasks: list[asyncio.Task[None]] = []

    def served(kind: str, tenant_id: str) -> bool:
        try:
            tenants.check(tenant_id)
        except PermanentError:
            EVENTS.labels(kind, "skipped_unknown_tenant").inc()
            return False
        EVENTS.labels(kind, "stored").inc()
        return True

    async def update_knowledge(keys: Iterable[tuple[str, str]], *, retract_only: bool = False) -> None:
        """Index (or retract) the approved interactions among `keys` as documents of their tenant;
        with `retract_only`, only send the deletes of those that stand retracted."""
        if not settings.index_approved_interactions:
            return
        for tenant_id, correlation_id in keys:
            history = store.feedback(tenant_id, correlation_id)
            if not history:
                continue
            answered = next(iter(store.answers(tenant_id, correlation_id)), None)
            action = knowledge_action(answered, history, settings.min_accept_rating)
            meta = new_meta(tenant_id=tenant_id, producer=settings.service_name)
            if isinstance(action, Index) and not retract_only:
                document = action.document
                ingest = DocumentIngestRequested(meta=meta, document=document)
                key = f"{tenant_id}/{document.document_id}"
                await publish_event(broker, INGEST_REQUESTED.name, ingest, key=key)
                KNOWLEDGE.labels("indexed").inc()
            elif isinstance(action, Retract):
                delete = DocumentDeleteRequested(meta=meta, document_id=action.document_id)
                key = f"{tenant_id}/{action.document_id}"
                await publish_event(broker, DELETE_REQUESTED.name, delete, key=key)
                KNOWLEDGE.labels("retracted").inc()

    async def on_answered(decoded: Decoded[QueryAnswered]) -> Rejected:
        answers = [
            answered_record(
                event,
                max_context_chunks=settings.max_context_chunks,
                support_threshold=settings.sentence_support_threshold,
            )
            for _, event in decoded
            if served("answered", event.meta.tenant_id)
        ]
        store.add_answers(answers)
        # Feedback that arrived before its answer waited for it.
        await update_knowledge((a.tenant_id, a.correlation_id) for a in answers)
        return []

    async def on_feedback(decoded: Decoded[FeedbackRecorded]) -> Rejected:
        items = [feedback_record(e) for _, e in decoded if served("feedback", e.meta.tenant_id)]
        store.add_feedback(items)
        await update_knowledge(dict.fromkeys((f.tenant_id, f.correlation_id) for f in items))
        return []

    async def on_indexed(decoded: Decoded[DocumentIndexed]) -> Rejected:
        # A knowledge document indexed after its retraction (the delete overtook the ingest) goes again.
        late = [
            (event.meta.tenant_id, correlation_id)
            for _, event in decoded
            if (correlation_id := interaction_of(event.document_id))
            and served("knowledge_indexed", event.meta.tenant_id)
        ]
        await update_knowledge(dict.fromkeys(late), retract_only=True)
        return []

    async def on_alert(decoded: Decoded[QualityAlert]) -> Rejected:
        for _, event in decoded:
            if served("quality_alert", event.meta.tenant_id):
                at = event.meta.occurred_at.ToMilliseconds() / 1000
                store.add_alert(
                    event.meta.event_id,
                    event.meta.tenant_id,
                    PendingAlert(event.signal, event.observed, event.threshold, at),
                )
        return []

    # One consumer for the four inputs: one group member, so a start is one join.
    runtime.consume_routes(
        {
            QUERY_ANSWERED.name: Route(QueryAnswered, on_answered),
            FEEDBACK_RECORDED.name: Route(FeedbackRecorded, on_feedback),
            QUALITY_ALERTS.name: Route(QualityAlert, on_alert),
            DOCUMENT_INDEXED.name: Route(DocumentIndexed, on_indexed),
        },
        max_records=settings.max_batch_records,
        title="finetune:inputs",
    )

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        try:
            yield
        finally:
            await scheduler.stop()
            for task in promotion_tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if promoter is not None:
                await promoter.close()
            store.close()

    async def start_scheduler() -> None:
        await scheduler.start()
        if promoter is not None:  # Triton may still be starting: bootstrap retries in the background
            promotion_tasks.append(asyncio.create_task(promoter.bootstrap()))
            promotion_tasks.append(asyncio.create_task(promoter.watch(settings.canary_check_interval_s)))

    def registrations() -> Iterable[Registration]:
        return [
            (
                pb_grpc.add_FineTuneServiceServicer_to_server,
                FineTuneServicer(scheduler, store, tenants),
                pb.DESCRIPTOR.services_by_name["FineTuneService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, lifespan=lifespan, before_serving=[start_scheduler])
