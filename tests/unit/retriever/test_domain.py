"""The retriever's ordering of ingests and deletes: which time each side is judged by."""

from __future__ import annotations

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.ingest.v1.document_pb2 import Chunk, Document
from llmops.ingest.v1.events_pb2 import ChunksEmbedded, DocumentDeleteRequested, DocumentIngestRequested

from services.embedder.domain import chunks_embedded
from services.retriever import domain
from shared.events import new_meta


def _at(seconds: int, micros: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def test_the_embedder_passes_on_when_the_ingest_was_requested() -> None:
    request = DocumentIngestRequested(
        meta=new_meta(tenant_id="t", producer="gateway"),
        document=Document(document_id="d", content=b"Some text."),
    )
    request.meta.occurred_at.CopyFrom(_at(1_700_000_000, 250))
    chunk = Chunk(chunk_id="d:0", document_id="d", chunk_index=0, text="Some text.")
    event = chunks_embedded(
        request, [chunk], np.zeros((1, 3), dtype=np.float32), model="m", producer="embedder"
    )
    assert event.requested_at == request.meta.occurred_at
    assert event.meta.occurred_at != request.meta.occurred_at  # the chunks' own event is later
    assert domain.requested_at_us(event) == 1_700_000_000_000_250


def test_chunks_from_an_older_producer_are_judged_by_their_own_time() -> None:
    event = ChunksEmbedded(meta=new_meta(tenant_id="t", producer="embedder"), document_id="d")
    event.meta.occurred_at.CopyFrom(_at(1_700_000_100))
    assert not event.HasField("requested_at")
    assert domain.requested_at_us(event) == 1_700_000_100_000_000


def test_a_delete_is_judged_by_when_it_was_requested() -> None:
    delete = DocumentDeleteRequested(meta=new_meta(tenant_id="t", producer="gateway"), document_id="d")
    delete.meta.occurred_at.CopyFrom(_at(1_700_000_050, 7))
    assert domain.deleted_at_us(delete) == 1_700_000_050_000_007


def test_a_superseded_ingest_says_why_and_keeps_its_correlation() -> None:
    event = ChunksEmbedded(meta=new_meta(tenant_id="t", producer="embedder"), document_id="d")
    failed = domain.ingest_superseded(event, producer="retriever")
    assert failed.document_id == "d"
    assert failed.failed_stage == "retriever"
    assert "deleted after this ingest was requested" in failed.reason
    assert failed.meta.correlation_id == event.meta.correlation_id
    assert failed.meta.tenant_id == "t"
