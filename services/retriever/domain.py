"""Pure logic of the retriever: request defaults and the events it publishes."""

from __future__ import annotations

from collections.abc import Sequence

from llmops.ingest.v1.events_pb2 import (
    ChunksEmbedded,
    DocumentDeleted,
    DocumentDeleteRequested,
    DocumentIndexed,
    DocumentIngestFailed,
)
from llmops.query.v1.events_pb2 import ContextRetrieved, QueryEmbedded
from llmops.query.v1.query_pb2 import RetrievalOptions, RetrievedChunk, StageTiming

from shared.errors import PermanentError
from shared.events import follow_meta

MAX_TOP_K = 100


def effective_options(
    options: RetrievalOptions, *, default_top_k: int, default_alpha: float
) -> RetrievalOptions:
    """The request's options with the service defaults filled in and checked."""
    result = RetrievalOptions()
    result.CopyFrom(options)
    if result.top_k == 0:
        result.top_k = default_top_k
    if result.top_k > MAX_TOP_K:
        raise PermanentError(f"top_k {result.top_k} is over the limit of {MAX_TOP_K}")
    if not result.HasField("alpha"):
        result.alpha = default_alpha
    if not 0.0 <= result.alpha <= 1.0:
        raise PermanentError(f"alpha {result.alpha} is outside [0, 1]")
    if not 0.0 <= result.score_threshold <= 1.0:
        raise PermanentError(f"score_threshold {result.score_threshold} is outside [0, 1]")
    return result


def document_indexed(
    event: ChunksEmbedded, *, chunk_count: int, unchanged: bool, producer: str
) -> DocumentIndexed:
    return DocumentIndexed(
        meta=follow_meta(event.meta, producer=producer),
        document_id=event.document_id,
        content_sha256=event.content_sha256,
        chunk_count=chunk_count,
        unchanged=unchanged,
    )


def document_deleted(event: DocumentDeleteRequested, *, chunk_count: int, producer: str) -> DocumentDeleted:
    return DocumentDeleted(
        meta=follow_meta(event.meta, producer=producer),
        document_id=event.document_id,
        chunk_count=chunk_count,
    )


def requested_at_us(event: ChunksEmbedded) -> int:
    """When the ingest behind these chunks was requested (µs since the epoch); an older producer that
    does not say: when the chunks were embedded, the nearest later time known."""
    stamp = event.requested_at if event.HasField("requested_at") else event.meta.occurred_at
    return int(stamp.ToMicroseconds())


def deleted_at_us(event: DocumentDeleteRequested) -> int:
    """When the delete was requested (µs since the epoch)."""
    return int(event.meta.occurred_at.ToMicroseconds())


def ingest_superseded(event: ChunksEmbedded, *, producer: str) -> DocumentIngestFailed:
    """The outcome of an ingest whose document was deleted after the ingest was requested."""
    return DocumentIngestFailed(
        meta=follow_meta(event.meta, producer=producer),
        document_id=event.document_id,
        reason="the document was deleted after this ingest was requested; its chunks were not stored",
        failed_stage=producer,
    )


def context_retrieved(
    event: QueryEmbedded, chunks: Sequence[RetrievedChunk], *, retrieve_ms: float, producer: str
) -> ContextRetrieved:
    return ContextRetrieved(
        meta=follow_meta(event.meta, producer=producer),
        request=event.request,
        chunks=chunks,
        timings=[*event.timings, StageTiming(stage="retrieve", duration_ms=retrieve_ms)],
    )
