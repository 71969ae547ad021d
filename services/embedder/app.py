"""The embedder process: documents to embedded chunks, questions to query vectors.

Both subscribers are batch subscribers: the texts of up to `max_batch_records` events are embedded
in shared model calls, which is what keeps service throughput close to the model's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from faststream import FastStream
from llmops.embedding.v1 import embedder_service_pb2 as pb
from llmops.embedding.v1 import embedder_service_pb2_grpc as pb_grpc
from llmops.ingest.v1.events_pb2 import DocumentIngestFailed, DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from services.embedder import domain
from services.embedder.chunking import Chunker, load_tokenizer
from services.embedder.embedding import Embedder, load_embedder
from services.embedder.settings import EmbedderSettings
from shared.bus import Decoded, Rejected, publish_event
from shared.documents import extract_text
from shared.errors import PermanentError
from shared.events import follow_meta
from shared.grpc_server import Registration
from shared.queries import check_reply_topic, deadline_passed, publish_query_failed
from shared.service import ServiceRuntime
from shared.topics import CHUNKS_EMBEDDED, INGEST_FAILED, INGEST_REQUESTED, QUERY_EMBEDDED, QUERY_REQUESTED

MAX_EMBED_RPC_TEXTS = 256
MAX_EMBED_RPC_CHARS = 8000


@dataclass
class Models:
    """Created in the lifespan (model load takes seconds), used by handlers and the servicer."""

    embedder: Embedder | None = None
    chunker: Chunker | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one model call at a time

    async def embed(self, texts: list[str]) -> Any:
        assert self.embedder is not None, "model not loaded"
        async with self.lock:
            return await asyncio.to_thread(self.embedder.embed, texts)


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    def __init__(self, models: Models) -> None:
        self.models = models

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        texts = list(request.texts)
        if not texts:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "texts is empty")
        if len(texts) > MAX_EMBED_RPC_TEXTS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_EMBED_RPC_TEXTS} texts per call"
            )
        if any(len(t) > MAX_EMBED_RPC_CHARS for t in texts):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"texts longer than {MAX_EMBED_RPC_CHARS} chars"
            )
        vectors = await self.models.embed(texts)
        assert self.models.embedder is not None
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=v.tolist()) for v in vectors],
            model=self.models.embedder.model_name,
            dimensions=self.models.embedder.dimensions,
        )


def create_app(settings: EmbedderSettings | None = None) -> FastStream:
    settings = settings or EmbedderSettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    tenants = settings.tenants.registry()
    models = Models()
    producer = settings.service_name

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        models.embedder = await asyncio.to_thread(
            load_embedder,
            settings.backend,
            settings.batch_size,
            triton_url=settings.triton.grpc_url,
            triton_model=settings.triton_model,
        )
        models.chunker = Chunker(load_tokenizer(), settings.chunk_tokens, settings.overlap_tokens)
        yield

    async def embed_documents(decoded: Decoded[DocumentIngestRequested]) -> Rejected:
        assert models.chunker is not None and models.embedder is not None
        rejected: Rejected = []
        prepared = []
        for record, event in decoded:
            try:
                tenants.check(event.meta.tenant_id)
                domain.validate_document_event(event)
                text = extract_text(event.document, max_bytes=settings.max_document_bytes)
                chunks = domain.document_chunks(event, models.chunker.split(text))
            except PermanentError as exc:
                rejected.append((record, exc))
                failed = DocumentIngestFailed(
                    meta=follow_meta(event.meta, producer=producer),
                    document_id=event.document.document_id,
                    reason=str(exc),
                    failed_stage=producer,
                )
                await publish_event(broker, INGEST_FAILED.name, failed, key=_doc_key(event))
                continue
            prepared.append((event, chunks))
        texts = [c.text for _, chunks in prepared for c in chunks]
        vectors = (
            await models.embed(texts) if texts else np.zeros((0, models.embedder.dimensions), np.float32)
        )
        offset = 0
        publishes = []
        for event, chunks in prepared:
            out = domain.chunks_embedded(
                event,
                chunks,
                vectors[offset : offset + len(chunks)],
                model=models.embedder.model_name,
                producer=producer,
            )
            offset += len(chunks)
            publishes.append(publish_event(broker, CHUNKS_EMBEDDED.name, out, key=_doc_key(event)))
        await asyncio.gather(*publishes)
        return rejected

    async def embed_questions(decoded: Decoded[QueryRequested]) -> Rejected:
        assert models.embedder is not None
        rejected: Rejected = []
        accepted = []
        for record, request in decoded:
            try:
                tenants.check(request.meta.tenant_id)
                domain.validate_question(request, settings.max_question_chars)
                check_reply_topic(request)
                passed = deadline_passed(request)  # InvalidDeadline for a malformed one
            except PermanentError as exc:
                rejected.append((record, exc))
                await publish_query_failed(
                    broker,
                    request,
                    reason=FailureReason.FAILURE_REASON_INVALID_ARGUMENT,
                    detail=str(exc),
                    stage=producer,
                )
                continue
            if passed:
                await publish_query_failed(
                    broker,
                    request,
                    reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
                    detail="deadline passed before embedding",
                    stage=producer,
                )
                continue
            accepted.append(request)
        if not accepted:
            return rejected
        started = time.perf_counter()
        vectors = await models.embed([r.question for r in accepted])
        embed_ms = (time.perf_counter() - started) * 1000
        await asyncio.gather(
            *[
                publish_event(
                    broker,
                    QUERY_EMBEDDED.name,
                    domain.query_embedded(
                        r, v, model=models.embedder.model_name, embed_ms=embed_ms, producer=producer
                    ),
                    key=r.meta.correlation_id,
                )
                for r, v in zip(accepted, vectors, strict=True)
            ]
        )
        return rejected

    runtime.consume_batches(
        INGEST_REQUESTED.name,
        DocumentIngestRequested,
        embed_documents,
        max_records=settings.max_batch_records,
        title="embedder:ingest",
    )

    runtime.consume_batches(
        QUERY_REQUESTED.name,
        QueryRequested,
        embed_questions,
        max_records=settings.max_batch_records,
        title="embedder:query",
    )

    def registrations() -> Iterable[Registration]:
        return [
            (
                pb_grpc.add_EmbedderServiceServicer_to_server,
                EmbedderServicer(models),
                pb.DESCRIPTOR.services_by_name["EmbedderService"].full_name,
            )
        ]

    return runtime.app(grpc_registrations=registrations, lifespan=lifespan)


def _doc_key(event: DocumentIngestRequested) -> str:
    return f"{event.meta.tenant_id}/{event.document.document_id}"
