"""Pure logic of the embedder: documents to chunks, chunks and questions to events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from llmops.ingest.v1.document_pb2 import Chunk, EmbeddedChunk
from llmops.ingest.v1.events_pb2 import ChunksEmbedded, DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryEmbedded, QueryRequested
from llmops.query.v1.query_pb2 import StageTiming

from services.embedder.chunking import TextChunk
from shared.documents import content_sha256
from shared.errors import PermanentError
from shared.events import follow_meta


def chunk_id(document_id: str, index: int) -> str:
    """Stable chunk id: the same document and position always give the same id."""
    return f"{document_id}#{index}"


def document_chunks(event: DocumentIngestRequested, pieces: Sequence[TextChunk]) -> list[Chunk]:
    doc = event.document
    return [
        Chunk(
            chunk_id=chunk_id(doc.document_id, piece.index),
            document_id=doc.document_id,
            chunk_index=piece.index,
            text=piece.text,
            source_uri=doc.source_uri,
            metadata=dict(doc.metadata),
            token_count=piece.token_count,
        )
        for piece in pieces
    ]


def validate_document_event(event: DocumentIngestRequested) -> None:
    """Checks that do not need the content parsed."""
    if not event.document.document_id:
        raise PermanentError("document.document_id is empty")
    if len(event.document.document_id) > 256:
        raise PermanentError("document.document_id is longer than 256 characters")


def chunks_embedded(
    event: DocumentIngestRequested,
    chunks: Sequence[Chunk],
    vectors: npt.NDArray[np.float32],
    *,
    model: str,
    producer: str,
) -> ChunksEmbedded:
    doc = event.document
    embedded = ChunksEmbedded(
        meta=follow_meta(event.meta, producer=producer),
        document_id=doc.document_id,
        content_sha256=doc.content_sha256 or content_sha256(doc.content),
        embedding_model=model,
        chunks=[
            EmbeddedChunk(chunk=chunk, vector=vector.tolist())
            for chunk, vector in zip(chunks, vectors, strict=True)
        ],
    )
    if event.meta.HasField("occurred_at"):  # a delete requested after this wins at the retriever
        embedded.requested_at.CopyFrom(event.meta.occurred_at)
    return embedded


def validate_question(request: QueryRequested, max_chars: int) -> None:
    if not request.question.strip():
        raise PermanentError("question is empty")
    if len(request.question) > max_chars:
        raise PermanentError(f"question is {len(request.question)} characters, over the {max_chars} limit")


def query_embedded(
    request: QueryRequested, vector: npt.NDArray[np.float32], *, model: str, embed_ms: float, producer: str
) -> QueryEmbedded:
    return QueryEmbedded(
        meta=follow_meta(request.meta, producer=producer),
        request=request,
        vector=vector.tolist(),
        embedding_model=model,
        timings=[StageTiming(stage="embed", duration_ms=embed_ms)],
    )
