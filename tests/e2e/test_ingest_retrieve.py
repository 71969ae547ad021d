"""Ingestion and retrieval end to end: gateway, embedder and retriever as separate processes on the
real Kafka and Weaviate (issue: ingestion and retrieval)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import weaviate as weaviate_client
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.embedding.v1 import embedder_service_pb2 as embed_pb
from llmops.embedding.v1 import embedder_service_pb2_grpc as embed_grpc
from llmops.ingest.v1.document_pb2 import Chunk, Document, EmbeddedChunk
from llmops.ingest.v1.events_pb2 import (
    ChunksEmbedded,
    DocumentDeleted,
    DocumentDeleteRequested,
    DocumentIndexed,
    DocumentIngestFailed,
    DocumentIngestRequested,
)
from llmops.query.v1.events_pb2 import ContextRetrieved, QueryRequested
from llmops.query.v1.query_pb2 import RetrievalOptions
from llmops.retrieval.v1 import retriever_service_pb2 as search_pb
from llmops.retrieval.v1 import retriever_service_pb2_grpc as search_grpc
from weaviate.classes.query import Filter

from services.gateway.auth import issue_key
from shared.bus import DLQ_REASON, DLQ_TOPIC
from shared.events import new_meta
from shared.infra.stack import Stack
from shared.topics import (
    CHUNKS_EMBEDDED,
    CONTEXT_RETRIEVED,
    DEAD_LETTER,
    DELETE_REQUESTED,
    DOCUMENT_DELETED,
    DOCUMENT_INDEXED,
    INGEST_FAILED,
    INGEST_REQUESTED,
    QUERY_REQUESTED,
)
from tests.support.kafka_tools import produce_events, produce_raw, read_all, topic_events
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

COLLECTION = "ChunkE2e"
KAFKA_DOC = (
    "Apache Kafka splits every topic into partitions. Each partition is consumed by one member of a "
    "consumer group at a time, so the partition count caps parallelism."
)
COOKING_DOC = "To bake bread, knead flour, water, salt and yeast, let the dough rise and bake it hot."


class Platform:
    def __init__(self, procs: dict[str, ServiceProcess], keys: dict[str, str], weaviate_client: Any) -> None:
        self.procs = procs
        self.keys = keys
        self.weaviate = weaviate_client

    def md(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.keys[tenant]),)

    async def ingest(
        self, tenant: str, doc_id: str, content: bytes, **metadata: str
    ) -> ingest_pb.IngestResponse:
        async with grpc.aio.insecure_channel(self.procs["gateway"].grpc_target) as channel:
            document = Document(
                document_id=doc_id, source_uri=f"file:///{doc_id}", content=content, metadata=metadata
            )
            response: ingest_pb.IngestResponse = await ingest_grpc.IngestServiceStub(channel).Ingest(
                ingest_pb.IngestRequest(document=document, wait_indexed=True),
                metadata=self.md(tenant),
                timeout=90,
            )
            return response

    async def delete(self, tenant: str, doc_id: str) -> str:
        """Request the delete; its correlation id."""
        async with grpc.aio.insecure_channel(self.procs["gateway"].grpc_target) as channel:
            response = await ingest_grpc.IngestServiceStub(channel).DeleteDocument(
                ingest_pb.DeleteDocumentRequest(document_id=doc_id), metadata=self.md(tenant), timeout=10
            )
        return str(response.correlation_id)

    async def search(self, tenant: str, text: str, **options: Any) -> list[Any]:
        async with grpc.aio.insecure_channel(self.procs["embedder"].grpc_target) as channel:
            embedded = await embed_grpc.EmbedderServiceStub(channel).Embed(
                embed_pb.EmbedRequest(texts=[text]), timeout=30
            )
        async with grpc.aio.insecure_channel(self.procs["retriever"].grpc_target) as channel:
            response = await search_grpc.RetrieverServiceStub(channel).Search(
                search_pb.SearchRequest(
                    tenant_id=tenant,
                    query_text=text,
                    query_vector=embedded.embeddings[0].values,
                    options=RetrievalOptions(**options),
                ),
                timeout=30,
            )
        return list(response.chunks)

    async def embed(self, text: str) -> list[float]:
        async with grpc.aio.insecure_channel(self.procs["embedder"].grpc_target) as channel:
            embedded = await embed_grpc.EmbedderServiceStub(channel).Embed(
                embed_pb.EmbedRequest(texts=[text]), timeout=30
            )
        return list(embedded.embeddings[0].values)

    def stored(self, tenant: str, doc_id: str) -> list[dict[str, Any]]:
        chunks = self.weaviate.collections.get(COLLECTION)
        if not chunks.tenants.exists(tenant):  # nothing of the tenant was ever stored
            return []
        collection = chunks.with_tenant(tenant)
        result = collection.query.fetch_objects(
            filters=Filter.by_property("document_id").equal(doc_id), limit=1000
        )
        return [o.properties for o in result.objects]


@pytest.fixture(scope="module")
def platform(
    kafka: str, weaviate: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("ingest-e2e")
    keys_file = workdir / "api-keys.json"
    keys = {tenant: issue_key(keys_file, tenant) for tenant in ("tenant-a", "tenant-b", "ghost")}
    common = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": COLLECTION,
        "LLMOPS_TENANTS_KNOWN": "tenant-a,tenant-b",  # "ghost" has a key but is not served
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        "LLMOPS_GATEWAY_MAX_DOCUMENT_BYTES": "200000",
        "LLMOPS_EMBEDDER_MAX_DOCUMENT_BYTES": "200000",
    }
    client = weaviate_client.connect_to_custom(
        http_host="127.0.0.1",
        http_port=test_stack.weaviate.http_port,
        http_secure=False,
        grpc_host="127.0.0.1",
        grpc_port=test_stack.weaviate.grpc_port,
        grpc_secure=False,
    )
    try:
        with platform_services(("embedder", "retriever", "gateway"), common, workdir) as procs:
            yield Platform(procs, keys, client)
    finally:
        client.close()


async def test_ingest_then_search_finds_the_right_chunk(platform: Platform) -> None:
    kafka = await platform.ingest("tenant-a", "kafka.md", KAFKA_DOC.encode())
    cooking = await platform.ingest("tenant-a", "bread.txt", COOKING_DOC.encode())
    assert kafka.chunk_count >= 1 and cooking.chunk_count >= 1 and not kafka.unchanged
    results = await platform.search("tenant-a", "how many consumers can read a partition in parallel?")
    assert results[0].document_id == "kafka.md"
    assert "partition" in results[0].text
    assert results[0].source_uri == "file:///kafka.md"
    assert 0.0 <= results[-1].score <= results[0].score <= 1.0


async def test_reingest_unchanged_is_a_no_op_and_update_replaces(platform: Platform) -> None:
    long_doc = " ".join(
        f"Sentence {i} talks about replication factor and in-sync replicas." for i in range(120)
    )
    first = await platform.ingest("tenant-a", "replication.md", long_doc.encode())
    assert first.chunk_count > 1
    stored_before = platform.stored("tenant-a", "replication.md")
    assert len(stored_before) == first.chunk_count

    again = await platform.ingest("tenant-a", "replication.md", long_doc.encode())
    assert again.unchanged
    assert len(platform.stored("tenant-a", "replication.md")) == first.chunk_count  # no duplicates

    updated = await platform.ingest("tenant-a", "replication.md", b"Short now: replicas copy partitions.")
    assert not updated.unchanged and updated.chunk_count == 1
    stored = platform.stored("tenant-a", "replication.md")
    assert [s["text"] for s in stored] == ["Short now: replicas copy partitions."]


async def test_delete_removes_the_documents_chunks(platform: Platform) -> None:
    await platform.ingest("tenant-a", "to-delete.md", b"Ephemeral zebra facts for deletion testing.")
    assert platform.stored("tenant-a", "to-delete.md")
    await platform.delete("tenant-a", "to-delete.md")
    for _ in range(100):
        if not platform.stored("tenant-a", "to-delete.md"):
            break
        await asyncio.sleep(0.1)
    assert platform.stored("tenant-a", "to-delete.md") == []
    results = await platform.search("tenant-a", "ephemeral zebra facts")
    assert all(r.document_id != "to-delete.md" for r in results)


async def _outcomes(kafka: str, topic: str, message_type: type[Any], correlation_id: str) -> list[Any]:
    """The events of `message_type` on `topic` that follow from the request `correlation_id`."""
    events = await topic_events(kafka, topic, message_type, timeout_s=1)
    return [e for e in events if e.meta.correlation_id == correlation_id]


async def _first_outcome(kafka: str, topic: str, message_type: type[Any], correlation_id: str) -> Any:
    for _ in range(30):
        found = await _outcomes(kafka, topic, message_type, correlation_id)
        if found:
            return found[0]
    return None


def _chunks_event(
    tenant: str, doc_id: str, text: str, vector: list[float], requested_at: Timestamp
) -> ChunksEmbedded:
    chunk = Chunk(
        chunk_id=f"{doc_id}:0", document_id=doc_id, chunk_index=0, text=text, source_uri=f"file:///{doc_id}"
    )
    event = ChunksEmbedded(
        meta=new_meta(tenant_id=tenant, producer="embedder"),
        document_id=doc_id,
        content_sha256=f"sha-{requested_at.ToMicroseconds()}",
        embedding_model="minilm",
        chunks=[EmbeddedChunk(chunk=chunk, vector=vector)],
    )
    event.requested_at.CopyFrom(requested_at)
    return event


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


async def test_a_delete_wins_over_an_ingest_requested_before_it(platform: Platform, kafka: str) -> None:
    """The chunks of an ingest requested before a delete reach the retriever after the delete ran:
    they are refused with a DocumentIngestFailed; an ingest requested after the delete is stored."""
    doc_id, text = "late-chunks.md", "Quokkas smile for photographs on Rottnest Island."
    vector = await platform.embed(text)
    requested_before = _now()
    await asyncio.sleep(0.01)
    delete = DocumentDeleteRequested(
        meta=new_meta(tenant_id="tenant-a", producer="upstream"), document_id=doc_id
    )
    await produce_events(kafka, DELETE_REQUESTED.name, [delete])
    deleted = await _first_outcome(kafka, DOCUMENT_DELETED.name, DocumentDeleted, delete.meta.correlation_id)
    assert deleted is not None, platform.procs["retriever"].log_tail()

    late = _chunks_event("tenant-a", doc_id, text, vector, requested_before)
    await produce_events(kafka, CHUNKS_EMBEDDED.name, [late])
    failed = await _first_outcome(kafka, INGEST_FAILED.name, DocumentIngestFailed, late.meta.correlation_id)
    assert failed is not None, platform.procs["retriever"].log_tail()
    assert "deleted after this ingest was requested" in failed.reason
    assert failed.failed_stage == "retriever"
    assert platform.stored("tenant-a", doc_id) == []

    again = _chunks_event("tenant-a", doc_id, text, vector, _now())
    await produce_events(kafka, CHUNKS_EMBEDDED.name, [again])
    indexed = await _first_outcome(kafka, DOCUMENT_INDEXED.name, DocumentIndexed, again.meta.correlation_id)
    assert indexed is not None, platform.procs["retriever"].log_tail()
    assert [s["content_sha256"] for s in platform.stored("tenant-a", doc_id)] == [again.content_sha256]


async def test_delete_right_after_an_ingest_leaves_nothing_behind(platform: Platform, kafka: str) -> None:
    """Through the gateway: an ingest that is not waited for, then its delete at once. The document is
    long enough (a few dozen chunks to embed) that the delete, which goes straight to the retriever,
    gets there first; the document must still end up deleted."""
    doc_id = "delete-right-away.md"
    words = ["narwhal", "tusk", "arctic", "whale", "tooth", "sensory", "organ", "pod", "ice", "migration"]
    content = " ".join(f"{words[i % len(words)]}{i % 97}" for i in range(6_000)).encode()
    document = Document(document_id=doc_id, source_uri=f"file:///{doc_id}", content=content)
    async with grpc.aio.insecure_channel(platform.procs["gateway"].grpc_target) as channel:
        accepted = await ingest_grpc.IngestServiceStub(channel).Ingest(
            ingest_pb.IngestRequest(document=document, wait_indexed=False),
            metadata=platform.md("tenant-a"),
            timeout=30,
        )
    deleting = await platform.delete("tenant-a", doc_id)
    # Both have been handled once the retriever published the delete's outcome and the ingest's (either
    # one: indexed, or refused because the delete came first).
    ingest_outcome = None
    for _ in range(30):
        indexed = await _outcomes(kafka, DOCUMENT_INDEXED.name, DocumentIndexed, accepted.correlation_id)
        failed = await _outcomes(kafka, INGEST_FAILED.name, DocumentIngestFailed, accepted.correlation_id)
        ingest_outcome = (indexed or failed or [None])[0]
        if ingest_outcome is not None:
            break
    assert ingest_outcome is not None, platform.procs["retriever"].log_tail()
    assert await _first_outcome(kafka, DOCUMENT_DELETED.name, DocumentDeleted, deleting) is not None
    assert platform.stored("tenant-a", doc_id) == [], platform.procs["retriever"].log_tail()


async def test_tenant_isolation_with_identical_text(platform: Platform) -> None:
    text = b"The secret launch code of the orbital platform is stored in vault seven."
    await platform.ingest("tenant-a", "secret.md", text, owner="a")
    await platform.ingest("tenant-b", "secret.md", text, owner="b")
    for tenant, owner in (("tenant-a", "a"), ("tenant-b", "b")):
        results = await platform.search(tenant, "where is the launch code stored?", top_k=20)
        assert results, tenant
        assert {r.metadata["owner"] for r in results if r.document_id == "secret.md"} == {owner}
    # Documents only tenant A has never show up in B.
    b_results = await platform.search("tenant-b", KAFKA_DOC, top_k=50)
    assert all(r.document_id != "kafka.md" for r in b_results)
    await platform.delete("tenant-a", "secret.md")
    for _ in range(100):
        if not platform.stored("tenant-a", "secret.md"):
            break
        await asyncio.sleep(0.1)
    assert platform.stored("tenant-a", "secret.md") == []
    assert len(platform.stored("tenant-b", "secret.md")) == 1


@pytest.mark.parametrize(
    ("content", "code", "detail"),
    [
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (b"\x00\xff\xfe binary \x00\x01 garbage", grpc.StatusCode.INVALID_ARGUMENT, "not text"),
        (b"a" * 300_000, grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ],
)
async def test_bad_documents_get_a_clear_grpc_error(
    platform: Platform, content: bytes, code: grpc.StatusCode, detail: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await platform.ingest("tenant-a", "bad.txt", content)
    assert info.value.code() == code
    assert detail in (info.value.details() or "")


async def test_unknown_tenant_and_missing_key_are_refused(platform: Platform) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await platform.ingest("ghost", "x.md", b"hello")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with grpc.aio.insecure_channel(platform.procs["gateway"].grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as no_key:
            await ingest_grpc.IngestServiceStub(channel).Ingest(
                ingest_pb.IngestRequest(document=Document(document_id="x", content=b"hi")), timeout=5
            )
    assert no_key.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_events_are_dead_lettered_and_the_embedder_keeps_working(
    platform: Platform, kafka: str
) -> None:
    empty = DocumentIngestRequested(
        meta=new_meta(tenant_id="tenant-a", producer="upstream"),
        document=Document(document_id="empty.txt", content=b""),
    )
    unknown = DocumentIngestRequested(
        meta=new_meta(tenant_id="nobody", producer="upstream"),
        document=Document(document_id="n.txt", content=b"hello there"),
    )
    good = DocumentIngestRequested(
        meta=new_meta(tenant_id="tenant-a", producer="upstream"),
        document=Document(document_id="after-bad.txt", content=b"Gardening with tomatoes."),
    )
    await produce_raw(kafka, INGEST_REQUESTED.name, [(b"k", b"\x12\x34 definitely not protobuf", {})])
    await produce_events(kafka, INGEST_REQUESTED.name, [empty, unknown, good])
    for _ in range(200):
        if platform.stored("tenant-a", "after-bad.txt"):
            break
        await asyncio.sleep(0.1)
    assert platform.stored("tenant-a", "after-bad.txt"), platform.procs["embedder"].log_tail()
    dead = [
        {k: v.decode() for k, v in r.headers}
        for r in await read_all(kafka, DEAD_LETTER.name, expected=10_000, timeout_s=5)
    ]
    reasons = [d[DLQ_REASON] for d in dead if d.get(DLQ_TOPIC) == INGEST_REQUESTED.name]
    assert any("not a valid llmops.ingest.v1.DocumentIngestRequested" in r for r in reasons), reasons
    assert any("empty" in r for r in reasons), reasons
    assert any("unknown tenant 'nobody'" in r for r in reasons), reasons


async def test_query_event_flows_to_context_retrieved(platform: Platform, kafka: str) -> None:
    await platform.ingest("tenant-a", "kafka.md", KAFKA_DOC.encode())
    request = QueryRequested(
        meta=new_meta(tenant_id="tenant-a", producer="upstream"),
        question="What caps the parallelism of a consumer group?",
    )
    await produce_events(kafka, QUERY_REQUESTED.name, [request])
    records = await read_all(kafka, CONTEXT_RETRIEVED.name, expected=10_000, timeout_s=20)
    matching = [r for r in records if r.key == request.meta.correlation_id.encode()]
    assert matching, "no ContextRetrieved for the request"
    context = ContextRetrieved()
    context.ParseFromString(matching[0].value)
    assert context.request.question == request.question
    assert context.chunks[0].document_id == "kafka.md"
    assert [t.stage for t in context.timings] == ["embed", "retrieve"]
