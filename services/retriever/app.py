"""The retriever process: indexes embedded chunks in Weaviate and answers searches with context."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from aiokafka.structs import ConsumerRecord
from faststream import FastStream
from faststream.middlewares import AckPolicy
from llmops.ingest.v1.events_pb2 import ChunksEmbedded, DocumentDeleteRequested, DocumentIngestFailed
from llmops.query.v1.events_pb2 import QueryEmbedded
from llmops.query.v1.query_pb2 import FailureReason
from llmops.retrieval.v1 import retriever_service_pb2 as pb
from llmops.retrieval.v1 import retriever_service_pb2_grpc as pb_grpc

from services.retriever import domain
from services.retriever.settings import RetrieverSettings
from services.retriever.store import ChunkStore, connect_store
from shared.bus import Decoded, Rejected, concurrently, protobuf_decoder, publish_event
from shared.errors import PermanentError, RetryableError
from shared.events import follow_meta
from shared.grpc_server import Registration
from shared.queries import deadline_passed, publish_query_failed, seconds_left
from shared.service import ServiceRuntime
from shared.topics import (
    CHUNKS_EMBEDDED,
    CONTEXT_RETRIEVED,
    DELETE_REQUESTED,
    DOCUMENT_DELETED,
    DOCUMENT_INDEXED,
    INGEST_FAILED,
    QUERY_EMBEDDED,
)

log = logging.getLogger(__name__)

# Retries stop this long before a request's deadline, so its QueryFailed still reaches the caller.
DEADLINE_MARGIN_S = 0.2


def retry_window(seconds: float | None, cap_s: float) -> float | None:
    """How long a search may retry Weaviate for a caller with `seconds` left, at most `cap_s`
    (None: no deadline, the store's own budget applies)."""
    return None if seconds is None else min(max(seconds - DEADLINE_MARGIN_S, 0.0), cap_s)


@dataclass
class Clients:
    """Created in the lifespan, used by handlers and the servicer."""

    store: ChunkStore | None = None

    @property
    def chunks(self) -> ChunkStore:
        assert self.store is not None, "store not connected"
        return self.store


class RetrieverServicer(pb_grpc.RetrieverServiceServicer):
    def __init__(self, clients: Clients, settings: RetrieverSettings) -> None:
        self.clients = clients
        self.settings = settings
        self.tenants = settings.tenants.registry()

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        try:
            self.tenants.check(request.tenant_id)
            options = domain.effective_options(
                request.options,
                default_top_k=self.settings.default_top_k,
                default_alpha=self.settings.default_alpha,
            )
            if not request.query_text.strip() and not request.query_vector:
                raise PermanentError("query_text and query_vector are both empty")
            chunks = await self.clients.chunks.search(
                request.tenant_id,
                request.query_text,
                list(request.query_vector),
                options,
                within_s=retry_window(context.time_remaining(), self.settings.search_retry_cap_s),
            )
        except PermanentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RetryableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Weaviate unavailable: {exc}")
        return pb.SearchResponse(chunks=chunks)


def create_app(settings: RetrieverSettings | None = None) -> FastStream:
    settings = settings or RetrieverSettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    tenants = settings.tenants.registry()
    clients = Clients()
    producer = settings.service_name

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        clients.store = await connect_store(
            settings.weaviate.url, settings.weaviate.grpc_port, settings.weaviate.collection
        )
        try:
            yield
        finally:
            await clients.store.close()

    async def reject_document(
        record: ConsumerRecord[Any, Any], event: ChunksEmbedded, exc: PermanentError
    ) -> None:
        failed = DocumentIngestFailed(
            meta=follow_meta(event.meta, producer=producer),
            document_id=event.document_id,
            reason=str(exc),
            failed_stage=producer,
        )
        await publish_event(
            broker, INGEST_FAILED.name, failed, key=f"{event.meta.tenant_id}/{event.document_id}"
        )

    async def index_unless_deleted(
        tenant: str, events: list[ChunksEmbedded]
    ) -> tuple[set[str], dict[str, tuple[int, bool] | PermanentError]]:
        """Store the documents of one tenant except those deleted after their ingest was requested:
        checked before the write, and again after it for a delete that ran meanwhile (its record is
        written before its chunks are deleted, so one of the two checks sees it). Returns the ids
        refused and the store's outcome for the rest."""
        requested = {event.document_id: domain.requested_at_us(event) for event in events}
        superseded = await clients.chunks.deleted_since(tenant, requested)
        writes = [
            (e.document_id, e.content_sha256, list(e.chunks))
            for e in events
            if e.document_id not in superseded
        ]
        outcomes = await clients.chunks.upsert_documents(tenant, writes) if writes else {}
        written = {
            doc: requested[doc]
            for doc, outcome in outcomes.items()
            if not isinstance(outcome, PermanentError)
        }
        for document_id in sorted(await clients.chunks.deleted_since(tenant, written)):
            await clients.chunks.delete_document(tenant, document_id)
            superseded.add(document_id)
        if superseded:
            log.info(
                "ingests superseded by deletes", extra={"tenant_id": tenant, "documents": sorted(superseded)}
            )
        return superseded, outcomes

    async def index_documents(decoded: Decoded[ChunksEmbedded]) -> Rejected:
        """Index a batch with a few Weaviate calls per tenant (EventGuard: a transient error from the
        store propagates, the batch stays uncommitted and is redelivered)."""
        rejected: Rejected = []
        rounds: list[dict[tuple[str, str], tuple[ConsumerRecord[Any, Any], ChunksEmbedded]]] = []
        for record, event in decoded:
            try:
                tenants.check(event.meta.tenant_id)
                if not event.document_id:
                    raise PermanentError("document_id is empty")
            except PermanentError as exc:
                await reject_document(record, event, exc)
                rejected.append((record, exc))
                continue
            key = (event.meta.tenant_id, event.document_id)
            # A document twice in one batch: the later version goes in a later round, in order.
            target = next((r for r in rounds if key not in r), None)
            if target is None:
                target = {}
                rounds.append(target)
            target[key] = (record, event)
        for items in rounds:
            by_tenant: dict[str, list[tuple[ConsumerRecord[Any, Any], ChunksEmbedded]]] = {}
            for (tenant, _), item in items.items():
                by_tenant.setdefault(tenant, []).append(item)
            for tenant, pairs in by_tenant.items():
                superseded, outcomes = await index_unless_deleted(tenant, [event for _, event in pairs])
                publishes = []
                for record, event in pairs:
                    if event.document_id in superseded:
                        failed = domain.ingest_superseded(event, producer=producer)
                        document_key = f"{tenant}/{event.document_id}"
                        publishes.append(publish_event(broker, INGEST_FAILED.name, failed, key=document_key))
                        continue
                    outcome = outcomes[event.document_id]
                    if isinstance(outcome, PermanentError):
                        await reject_document(record, event, outcome)
                        rejected.append((record, outcome))
                        continue
                    count, unchanged = outcome
                    indexed = domain.document_indexed(
                        event, chunk_count=count, unchanged=unchanged, producer=producer
                    )
                    publishes.append(
                        publish_event(
                            broker, DOCUMENT_INDEXED.name, indexed, key=f"{tenant}/{event.document_id}"
                        )
                    )
                await asyncio.gather(*publishes)
        return rejected

    async def retrieve_one(record: ConsumerRecord[Any, Any], event: QueryEmbedded) -> tuple[Any, Any] | None:
        request = event.request
        if deadline_passed(request):
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
                detail="deadline passed before retrieval",
                stage=producer,
            )
            return None
        started = time.perf_counter()
        left = seconds_left(request)
        window = retry_window(left, settings.search_retry_cap_s)
        try:
            tenants.check(event.meta.tenant_id)
            options = domain.effective_options(
                request.retrieval, default_top_k=settings.default_top_k, default_alpha=settings.default_alpha
            )
            chunks = await clients.chunks.search(
                event.meta.tenant_id,
                request.question,
                list(event.vector),
                options,
                within_s=window,
            )
        except PermanentError as exc:
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_INVALID_ARGUMENT,
                detail=str(exc),
                stage=producer,
            )
            return (record, exc)
        except RetryableError as exc:
            # Retried up to the request's deadline (or the store's budget without one, or the cap): the
            # caller gets a clear answer now. Retries stop before a sleep that would pass the deadline,
            # so a deadline-bound window ends in DEADLINE_EXCEEDED even with a moment left.
            past_deadline = window is not None and window < settings.search_retry_cap_s
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED
                if past_deadline
                else FailureReason.FAILURE_REASON_UNAVAILABLE,
                detail=f"retrieval unavailable after retries: {exc}",
                stage=producer,
            )
            return None
        out = domain.context_retrieved(
            event, chunks, retrieve_ms=(time.perf_counter() - started) * 1000, producer=producer
        )
        await publish_event(broker, CONTEXT_RETRIEVED.name, out, key=request.meta.correlation_id)
        return None

    runtime.consume_batches(
        CHUNKS_EMBEDDED.name,
        ChunksEmbedded,
        index_documents,
        max_records=settings.max_batch_records,
        title="retriever:index",
    )

    runtime.consume_batches(
        QUERY_EMBEDDED.name,
        QueryEmbedded,
        concurrently(retrieve_one),
        max_records=settings.max_batch_records,
        title="retriever:query",
    )

    @broker.subscriber(
        DELETE_REQUESTED.name,
        group_id=settings.group_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=protobuf_decoder(DocumentDeleteRequested),
        auto_offset_reset="earliest",
        title="retriever:delete",
    )
    async def on_delete(event: DocumentDeleteRequested) -> None:
        tenants.check(event.meta.tenant_id)
        if not event.document_id:
            raise PermanentError("document_id is empty")
        # The record first: an ingest writing meanwhile finds it after its write (index_unless_deleted).
        await clients.chunks.record_deletion(
            event.meta.tenant_id,
            event.document_id,
            domain.deleted_at_us(event),
            event.meta.event_id,
            prune_before_us=int((time.time() - settings.deletion_record_retention_s) * 1_000_000),
        )
        count = await clients.chunks.delete_document(event.meta.tenant_id, event.document_id)
        deleted = domain.document_deleted(event, chunk_count=count, producer=producer)
        await publish_event(
            broker, DOCUMENT_DELETED.name, deleted, key=f"{event.meta.tenant_id}/{event.document_id}"
        )

    def registrations() -> Iterable[Registration]:
        return [
            (
                pb_grpc.add_RetrieverServiceServicer_to_server,
                RetrieverServicer(clients, settings),
                pb.DESCRIPTOR.services_by_name["RetrieverService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, lifespan=lifespan)
