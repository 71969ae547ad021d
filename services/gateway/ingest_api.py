"""The gateway's IngestService: documents in, DocumentIngestRequested / DocumentDeleteRequested out."""

from __future__ import annotations

import asyncio

import grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import (
    DocumentDeleteRequested,
    DocumentIngestFailed,
    DocumentIngestRequested,
)

from services.gateway.auth import Caller
from services.gateway.replies import PendingReplies
from services.gateway.settings import GatewaySettings
from shared.bus import publish_event
from shared.documents import content_sha256, detect_format, extract_text
from shared.errors import PermanentError
from shared.events import new_meta
from shared.grpc_errors import abort
from shared.service import ServiceRuntime
from shared.topics import DELETE_REQUESTED, INGEST_REQUESTED


class IngestServicer(ingest_grpc.IngestServiceServicer):
    def __init__(
        self, runtime: ServiceRuntime, settings: GatewaySettings, pending: PendingReplies, caller: Caller
    ) -> None:
        self.broker = runtime.broker
        self.settings = settings
        self.pending = pending
        self.caller = caller

    async def Ingest(
        self, request: ingest_pb.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb.IngestResponse:
        tenant = await self.caller.tenant(context)
        document = Document()
        document.CopyFrom(request.document)
        if not document.document_id:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "document.document_id is required",
                reason="INVALID_DOCUMENT",
            )
        try:
            document.format = detect_format(document.source_uri, document.format)  # type: ignore[assignment]
            extract_text(document, max_bytes=self.settings.max_document_bytes)  # reject bad input up front
        except PermanentError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), reason="INVALID_DOCUMENT")
        document.content_sha256 = content_sha256(document.content)
        event = DocumentIngestRequested(
            meta=new_meta(tenant_id=tenant, producer="gateway"), document=document
        )
        correlation_id = event.meta.correlation_id
        inbox = self.pending.expect(correlation_id) if request.wait_indexed else None
        try:
            await publish_event(
                self.broker, INGEST_REQUESTED.name, event, key=f"{tenant}/{document.document_id}"
            )
            response = ingest_pb.IngestResponse(
                correlation_id=correlation_id,
                document_id=document.document_id,
                content_sha256=document.content_sha256,
            )
            if inbox is None:
                return response
            remaining = context.time_remaining()
            timeout = self.settings.default_wait_s if remaining is None else max(remaining - 0.05, 0.0)
            try:
                result = await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                await abort(
                    context,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "document not indexed before the deadline",
                    reason="DEADLINE_EXCEEDED",
                    correlation_id=correlation_id,
                )
            if isinstance(result, DocumentIngestFailed):
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{result.failed_stage}: {result.reason}",
                    reason="INGEST_FAILED",
                    correlation_id=correlation_id,
                )
            response.chunk_count = result.chunk_count
            response.unchanged = result.unchanged
            return response
        finally:
            self.pending.forget(correlation_id)

    async def DeleteDocument(
        self, request: ingest_pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb.DeleteDocumentResponse:
        tenant = await self.caller.tenant(context)
        if not request.document_id:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "document_id is required",
                reason="INVALID_DOCUMENT",
            )
        event = DocumentDeleteRequested(
            meta=new_meta(tenant_id=tenant, producer="gateway"), document_id=request.document_id
        )
        await publish_event(self.broker, DELETE_REQUESTED.name, event, key=f"{tenant}/{request.document_id}")
        return ingest_pb.DeleteDocumentResponse(correlation_id=event.meta.correlation_id)
