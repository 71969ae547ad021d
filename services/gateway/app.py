"""The gateway process: the public gRPC API (ingest and delete now; query and feedback next)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import grpc
from faststream import FastStream
from faststream.middlewares import AckPolicy
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import (
    DocumentDeleteRequested,
    DocumentIndexed,
    DocumentIngestFailed,
    DocumentIngestRequested,
)

from services.gateway.auth import ApiKeys
from services.gateway.replies import PendingReplies
from services.gateway.settings import GatewaySettings
from shared.bus import protobuf_decoder, publish_event, wait_for_assignment
from shared.documents import content_sha256, detect_format, extract_text
from shared.errors import PermanentError
from shared.events import new_meta
from shared.grpc_server import Registration
from shared.service import ServiceRuntime
from shared.topics import DELETE_REQUESTED, DOCUMENT_INDEXED, INGEST_FAILED, INGEST_REQUESTED


class IngestServicer(ingest_grpc.IngestServiceServicer):
    def __init__(self, runtime: ServiceRuntime, settings: GatewaySettings, pending: PendingReplies) -> None:
        self.broker = runtime.broker
        self.settings = settings
        self.pending = pending
        self.api_keys = ApiKeys.load(settings.api_keys_file)
        self.tenants = settings.tenants.registry()

    async def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        tenant = await self.api_keys.authenticate(context)
        try:
            return self.tenants.check(tenant)
        except PermanentError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise  # unreachable: abort raises

    async def Ingest(
        self, request: ingest_pb.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb.IngestResponse:
        tenant = await self._tenant(context)
        document = Document()
        document.CopyFrom(request.document)
        if not document.document_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "document.document_id is required")
        document.format = detect_format(document.source_uri, document.format)  # type: ignore[assignment]
        try:
            extract_text(document, max_bytes=self.settings.max_document_bytes)  # reject bad input up front
        except PermanentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        document.content_sha256 = content_sha256(document.content)
        event = DocumentIngestRequested(
            meta=new_meta(tenant_id=tenant, producer="gateway"), document=document
        )
        correlation_id = event.meta.correlation_id
        reply = self.pending.expect(correlation_id) if request.wait_indexed else None
        try:
            await publish_event(
                self.broker, INGEST_REQUESTED.name, event, key=f"{tenant}/{document.document_id}"
            )
            response = ingest_pb.IngestResponse(
                correlation_id=correlation_id,
                document_id=document.document_id,
                content_sha256=document.content_sha256,
            )
            if reply is None:
                return response
            remaining = context.time_remaining()
            timeout = self.settings.default_wait_s if remaining is None else max(remaining - 0.05, 0.0)
            try:
                result = await asyncio.wait_for(reply, timeout)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "document not indexed before the deadline"
                )
            if isinstance(result, DocumentIngestFailed):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{result.failed_stage}: {result.reason}"
                )
            response.chunk_count = result.chunk_count
            response.unchanged = result.unchanged
            return response
        finally:
            self.pending.forget(correlation_id)

    async def DeleteDocument(
        self, request: ingest_pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb.DeleteDocumentResponse:
        tenant = await self._tenant(context)
        if not request.document_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "document_id is required")
        event = DocumentDeleteRequested(
            meta=new_meta(tenant_id=tenant, producer="gateway"), document_id=request.document_id
        )
        await publish_event(self.broker, DELETE_REQUESTED.name, event, key=f"{tenant}/{request.document_id}")
        return ingest_pb.DeleteDocumentResponse(correlation_id=event.meta.correlation_id)


def create_app(settings: GatewaySettings | None = None) -> FastStream:
    settings = settings or GatewaySettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    pending = PendingReplies()
    # Every gateway replica must see every reply, so each listens in a group of its own, from "now".
    reply_group = f"{settings.group_id}.replies.{uuid.uuid4().hex[:12]}"

    indexed_replies = broker.subscriber(
        DOCUMENT_INDEXED.name,
        group_id=reply_group,
        auto_offset_reset="latest",
        ack_policy=AckPolicy.ACK_FIRST,  # replies only matter to a caller waiting right now
        decoder=protobuf_decoder(DocumentIndexed),
        title="gateway:indexed",
    )
    failed_replies = broker.subscriber(
        INGEST_FAILED.name,
        group_id=reply_group,
        auto_offset_reset="latest",
        ack_policy=AckPolicy.ACK_FIRST,
        decoder=protobuf_decoder(DocumentIngestFailed),
        title="gateway:failed",
    )

    @indexed_replies
    async def on_indexed(event: DocumentIndexed) -> None:
        pending.resolve(event.meta.correlation_id, event)

    @failed_replies
    async def on_failed(event: DocumentIngestFailed) -> None:
        pending.resolve(event.meta.correlation_id, event)

    async def replies_assigned() -> None:
        for subscriber in (indexed_replies, failed_replies):
            await wait_for_assignment(subscriber)

    def registrations() -> Iterable[Registration]:
        return [
            (
                ingest_grpc.add_IngestServiceServicer_to_server,
                IngestServicer(runtime, settings, pending),
                ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, before_serving=[replies_assigned])
