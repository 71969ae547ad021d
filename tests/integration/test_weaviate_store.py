"""The retriever's ChunkStore against the real Weaviate server the test fixtures start.

Vectors are synthetic unit vectors (numpy, fixed seeds); every test works in tenants of its own, in a
collection of this module's own, so tests neither see nor disturb each other's objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
import httpx
import numpy as np
import pytest
import weaviate
from llmops.ingest.v1.document_pb2 import Chunk, EmbeddedChunk
from llmops.query.v1.query_pb2 import RetrievalOptions
from weaviate.classes.data import DataObject
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateConnectionError,
    WeaviateDeleteManyError,
    WeaviateGRPCUnavailableError,
    WeaviateQueryError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from services.retriever.store import (
    ChunkStore,
    RetryBudget,
    chunk_uuid,
    connect_store,
    deletions_collection,
    is_weaviate_transient,
    metadata_pair,
)
from shared.errors import PermanentError, RetryableError
from shared.infra.stack import Stack
from tests.support.processes import closed_port

pytestmark = pytest.mark.integration

COLLECTION = f"Chunk{uuid.uuid4().hex[:8]}"
DIM = 384
FAST_FAIL = RetryBudget(
    attempts=2, max_delay_s=1.0, attempt_timeout_s=1.5, initial_wait_s=0.05, max_wait_s=0.1
)


def unit(seed: int, dim: int = DIM) -> list[float]:
    vector = np.random.default_rng(seed).standard_normal(dim)
    return [float(x) for x in vector / np.linalg.norm(vector)]


def near(vector: Sequence[float], seed: int, noise: float = 0.05) -> list[float]:
    """A query vector close to `vector` (cosine ~0.99), as a paraphrased question would be."""
    jitter = np.random.default_rng(seed).standard_normal(len(vector)) * noise
    moved = np.asarray(vector) + jitter / np.sqrt(len(vector)) * 10
    return [float(x) for x in moved / np.linalg.norm(moved)]


def chunks(
    document_id: str,
    texts: Sequence[str],
    *,
    seed: int = 0,
    metadata: Sequence[Mapping[str, str]] | None = None,
    dim: int = DIM,
) -> list[EmbeddedChunk]:
    return [
        EmbeddedChunk(
            chunk=Chunk(
                chunk_id=f"{document_id}:{i}",
                document_id=document_id,
                chunk_index=i,
                text=text,
                source_uri=f"file:///docs/{document_id}.md",
                metadata=dict(metadata[i]) if metadata else {"doc": document_id},
                token_count=len(text.split()),
            ),
            vector=unit(seed * 1000 + i, dim),
        )
        for i, text in enumerate(texts)
    ]


def options(
    top_k: int = 0,
    alpha: float | None = 0.0,
    score_threshold: float = 0.0,
    metadata_filter: Mapping[str, str] | None = None,
) -> RetrievalOptions:
    """Search options; alpha None leaves the field unset (the store's default applies)."""
    return RetrievalOptions(
        top_k=top_k, alpha=alpha, score_threshold=score_threshold, metadata_filter=metadata_filter or {}
    )


def tenant(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


TEXTS = [
    "Kafka keeps an ordered append-only log per partition",
    "Weaviate stores vectors in an HNSW graph for approximate nearest neighbours",
    "Triton serves models over gRPC with decoupled streaming responses",
]


@pytest.fixture(scope="module")
async def store(weaviate: str, test_stack: Stack) -> AsyncIterator[ChunkStore]:
    chunk_store = await connect_store(weaviate, test_stack.weaviate.grpc_port, collection=COLLECTION)
    yield chunk_store
    await chunk_store.client.collections.delete([COLLECTION, deletions_collection(COLLECTION)])
    await chunk_store.close()


async def test_upsert_then_bm25_vector_and_hybrid_search_find_the_chunk(store: ChunkStore) -> None:
    t = tenant("find")
    docs = chunks("guide", TEXTS, seed=1)
    assert await store.upsert_document(t, "guide", "sha-1", docs) == 3
    assert await store.document_sha256(t, "guide") == "sha-1"

    bm25 = await store.search(t, "ordered log partition", [], options(top_k=3))
    assert bm25[0].chunk_id == "guide:0"
    assert bm25[0].score == pytest.approx(1.0)
    assert bm25[0].document_id == "guide"
    assert bm25[0].text == TEXTS[0]
    assert bm25[0].source_uri == "file:///docs/guide.md"
    assert dict(bm25[0].metadata) == {"doc": "guide"}

    vector = await store.search(t, "", near(docs[1].vector, seed=7), options(top_k=3, alpha=1.0))
    assert vector[0].chunk_id == "guide:1"
    assert all(0.0 <= c.score <= 1.0 for c in vector)

    # The text points at chunk 2, the vector too: hybrid puts it first with both halves of the score.
    hybrid = await store.search(t, "Triton decoupled streaming", near(docs[2].vector, 8), options(alpha=0.5))
    assert hybrid[0].chunk_id == "guide:2"
    assert hybrid[0].score == pytest.approx(1.0)


async def test_unset_alpha_means_hybrid_and_alpha_zero_means_bm25_only(store: ChunkStore) -> None:
    t = tenant("alpha")
    docs = chunks("doc", ["alpha bravo", "charlie delta"], seed=16)
    await store.upsert_document(t, "doc", "sha", docs)
    query_vector = near(docs[1].vector, seed=17)  # the text matches chunk 0, the vector chunk 1
    assert {c.chunk_id for c in await store.search(t, "alpha", query_vector, options(alpha=None))} == {
        "doc:0",
        "doc:1",
    }
    assert [c.chunk_id for c in await store.search(t, "alpha", query_vector, options(alpha=0.0))] == ["doc:0"]
    assert (await store.search(t, "alpha", query_vector, options(alpha=1.0)))[0].chunk_id == "doc:1"


async def test_replaying_an_upsert_creates_no_duplicates(store: ChunkStore) -> None:
    t = tenant("replay")
    docs = chunks("doc", TEXTS, seed=2)
    for _ in range(3):
        assert await store.upsert_document(t, "doc", "sha-a", docs) == 3
    assert await store.count_objects(t) == 3
    assert await store.count_objects(t, "doc") == 3
    hits = await store.search_hits(t, "Kafka", [], options(top_k=10))
    assert [h.uuid for h in hits] == [chunk_uuid(t, "doc", 0)]


async def test_update_with_fewer_chunks_replaces_the_old_version(store: ChunkStore) -> None:
    t = tenant("update")
    await store.upsert_document(t, "doc", "sha-old", chunks("doc", TEXTS, seed=3))
    await store.upsert_document(t, "other", "sha-x", chunks("other", ["Triton on another page"], seed=4))
    new_texts = ["ClickHouse stores telemetry in columns", "Prometheus scrapes metrics"]
    assert await store.upsert_document(t, "doc", "sha-new", chunks("doc", new_texts, seed=5)) == 2

    assert await store.count_objects(t, "doc") == 2
    assert await store.count_objects(t) == 3  # the other document is untouched
    assert await store.document_sha256(t, "doc") == "sha-new"
    # Old words are gone from the BM25 index of this document; the new text is found.
    assert [c.document_id for c in await store.search(t, "Triton", [], options(top_k=10))] == ["other"]
    found = await store.search(t, "telemetry columns", [], options(top_k=10))
    assert [c.chunk_id for c in found] == ["doc:0"]
    assert found[0].text == new_texts[0]


async def test_batch_upsert_writes_new_skips_unchanged_replaces_changed_and_rejects_bad(
    store: ChunkStore,
) -> None:
    t = tenant("batch")
    await store.upsert_document(t, "same", "sha-same", chunks("same", TEXTS[:1], seed=6))
    await store.upsert_document(t, "changed", "sha-v1", chunks("changed", TEXTS, seed=7))
    bad = chunks("bad", ["x"], seed=8)
    bad[0].vector[:] = [float("nan")] * DIM
    outcomes = await store.upsert_documents(
        t,
        [
            ("new", "sha-new", chunks("new", TEXTS[1:], seed=9)),
            ("same", "sha-same", chunks("same", TEXTS[:1], seed=6)),
            ("changed", "sha-v2", chunks("changed", ["Only one chunk now"], seed=10)),
            ("bad", "sha-bad", bad),
        ],
    )
    assert outcomes["new"] == (2, False)
    assert outcomes["same"] == (1, True)
    assert outcomes["changed"] == (1, False)
    assert isinstance(outcomes["bad"], PermanentError) and "NaN" in str(outcomes["bad"])
    assert await store.count_objects(t, "new") == 2
    assert await store.count_objects(t, "changed") == 1
    assert await store.document_sha256(t, "changed") == "sha-v2"
    assert await store.count_objects(t, "bad") == 0
    assert await store.count_objects(t) == 4


async def test_partially_written_document_reports_no_hash(store: ChunkStore) -> None:
    """A crash between writing the new chunks and deleting the old ones must force a re-ingest."""
    t = tenant("partial")
    await store.upsert_document(t, "doc", "sha-1", chunks("doc", TEXTS, seed=6))
    raw = store.client.collections.use(store.name).with_tenant(t)
    # Chunk 0 of a new version landed, the rest of the update did not.
    await raw.data.insert_many(
        [
            DataObject(
                uuid=chunk_uuid(t, "doc", 0),
                vector=unit(99),
                properties={
                    "document_id": "doc",
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "content_sha256": "sha-2",
                },
            )
        ]
    )
    assert await store.document_sha256(t, "doc") is None
    # A first version that lost a chunk is incomplete too.
    await store.upsert_document(t, "doc", "sha-1", chunks("doc", TEXTS, seed=6))
    assert await store.document_sha256(t, "doc") == "sha-1"
    assert await raw.data.delete_by_id(chunk_uuid(t, "doc", 2))
    assert await store.document_sha256(t, "doc") is None


async def test_delete_document_removes_every_chunk(store: ChunkStore) -> None:
    t = tenant("delete")
    await store.upsert_document(t, "doc", "sha", chunks("doc", TEXTS, seed=8))
    await store.upsert_document(t, "keep", "sha", chunks("keep", ["Kafka keeps offsets"], seed=9))
    assert await store.delete_document(t, "doc") == 3
    assert await store.count_objects(t, "doc") == 0
    assert await store.document_sha256(t, "doc") is None
    assert [c.document_id for c in await store.search(t, "Kafka", [], options(top_k=10))] == ["keep"]
    assert await store.delete_document(t, "doc") == 0
    assert await store.delete_document(t, "never-stored") == 0


async def test_deleted_since_refuses_ingests_requested_before_the_delete(store: ChunkStore) -> None:
    t = tenant("tomb")
    assert await store.deleted_since(t, {"doc": 1_000}) == set()  # no delete of this tenant yet
    await store.record_deletion(t, "doc", 2_000, deletion_id="delete-1")
    await store.record_deletion(t, "doc", 2_000, deletion_id="delete-1")  # a redelivered delete
    requested = {"doc": 1_000, "other": 1_000}
    assert await store.deleted_since(t, requested) == {"doc"}
    assert await store.deleted_since(t, {"doc": 2_000}) == {"doc"}  # the same instant: the delete wins
    assert await store.deleted_since(t, {"doc": 3_000}) == set()  # a re-ingest after the delete
    await store.record_deletion(t, "doc", 5_000, deletion_id="delete-2")
    assert await store.deleted_since(t, {"doc": 3_000}) == {"doc"}
    assert await store.deleted_since(tenant("tomb-other"), {"doc": 1_000}) == set()  # tenants apart


async def test_delete_records_past_their_retention_are_pruned(store: ChunkStore) -> None:
    t = tenant("prune")
    await store.record_deletion(t, "old", 1_000, deletion_id="delete-old")
    await store.record_deletion(t, "recent", 4_000, deletion_id="delete-recent")
    await store.record_deletion(t, "new", 6_000, deletion_id="delete-new", prune_before_us=3_000)
    assert await store.deleted_since(t, {"old": 500, "recent": 500, "new": 500}) == {"recent", "new"}


async def test_unknown_tenant_is_empty_not_an_error(store: ChunkStore) -> None:
    t = tenant("ghost")
    assert await store.search(t, "Kafka", unit(1), options(alpha=0.5)) == []
    assert await store.delete_document(t, "doc") == 0
    assert await store.document_sha256(t, "doc") is None
    assert await store.count_objects(t) == 0


async def test_tenants_are_isolated_even_for_identical_content(store: ChunkStore) -> None:
    a, b = tenant("A"), tenant("B")
    docs_a = chunks("shared", TEXTS, seed=10, metadata=[{"owner": "A"}] * 3)
    docs_b = chunks("shared", TEXTS, seed=10, metadata=[{"owner": "B"}] * 3)  # same text, same vectors
    await store.upsert_document(a, "shared", "sha", docs_a)
    await store.upsert_document(b, "shared", "sha", docs_b)
    uuids_a = {chunk_uuid(a, "shared", i) for i in range(3)}
    uuids_b = {chunk_uuid(b, "shared", i) for i in range(3)}
    assert not uuids_a & uuids_b

    for query_text, vector, alpha in (
        ("Kafka log", [], 0.0),
        ("", docs_a[1].vector, 1.0),
        ("HNSW", unit(5), 0.5),
    ):
        hits = await store.search_hits(a, query_text, vector, options(top_k=100, alpha=alpha))
        assert hits
        assert {h.uuid for h in hits} <= uuids_a
        assert {h.chunk.metadata["owner"] for h in hits} == {"A"}
    # B's metadata cannot be reached from A, not even by filtering for it.
    assert await store.search(a, "Kafka", unit(1), options(alpha=0.5, metadata_filter={"owner": "B"})) == []

    assert await store.delete_document(a, "shared") == 3
    assert await store.count_objects(a) == 0
    assert await store.count_objects(b) == 3
    hits_b = await store.search_hits(b, "Kafka log", [], options(top_k=10))
    assert {h.uuid for h in hits_b} <= uuids_b
    assert hits_b[0].chunk.metadata["owner"] == "B"


async def test_metadata_filters_match_exactly(store: ChunkStore) -> None:
    t = tenant("meta")
    texts = ["billing quota guide", "billing incident report", "billing quota faq", "billing odd keys"]
    meta = [
        {"lang": "en", "team": "payments"},
        {"lang": "de", "team": "payments"},
        {"lang": "en", "team": "support"},
        {"a=b": "c", "lang": "en gb"},
    ]
    await store.upsert_document(t, "doc", "sha", chunks("doc", texts, seed=11, metadata=meta))

    async def ids(flt: Mapping[str, str]) -> set[str]:
        return {
            c.chunk_id for c in await store.search(t, "billing", [], options(top_k=10, metadata_filter=flt))
        }

    assert await ids({}) == {"doc:0", "doc:1", "doc:2", "doc:3"}
    assert await ids({"lang": "en"}) == {"doc:0", "doc:2"}  # not "en gb": whole-value match
    assert await ids({"lang": "en", "team": "payments"}) == {"doc:0"}  # all pairs must match
    assert await ids({"team": "pay"}) == set()
    assert await ids({"lang": "en gb"}) == {"doc:3"}
    assert await ids({"a=b": "c"}) == {"doc:3"}
    assert await ids({"a": "b=c"}) == set()  # the key's "=" is escaped: no ambiguity
    assert metadata_pair("a=b", "c") != metadata_pair("a", "b=c")


async def test_score_threshold_drops_weak_hits(store: ChunkStore) -> None:
    t = tenant("score")
    texts = [
        "retrieval ranking retrieval ranking retrieval ranking",
        "retrieval of passages and other words about many unrelated things in a long sentence",
        "nothing relevant here at all",
    ]
    docs = chunks("doc", texts, seed=12)
    await store.upsert_document(t, "doc", "sha", docs)
    everything = await store.search(t, "retrieval ranking", docs[0].vector, options(top_k=10, alpha=0.5))
    scores = [c.score for c in everything]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert everything[0].chunk_id == "doc:0"
    assert len(everything) == 3
    threshold = (scores[0] + scores[-1]) / 2
    kept = await store.search(
        t, "retrieval ranking", docs[0].vector, options(top_k=10, alpha=0.5, score_threshold=threshold)
    )
    assert kept
    assert len(kept) < len(everything)
    assert all(c.score >= threshold for c in kept)


async def test_top_k_limits_results_with_default_and_cap(store: ChunkStore) -> None:
    t = tenant("topk")
    await store.upsert_document(
        t, "doc", "sha", chunks("doc", [f"common word {i}" for i in range(12)], seed=13)
    )
    assert len(await store.search(t, "common", [], options(top_k=3))) == 3
    assert len(await store.search(t, "common", [], options())) == 5  # top_k 0: the default
    assert len(await store.search(t, "common", [], options(top_k=100_000))) == 12  # capped at 100


async def test_invalid_tenant_ids_are_permanent_errors(store: ChunkStore) -> None:
    for bad in ("", "a/b", "x" * 65, "tenant with space", "t\u00e9", "../etc"):
        with pytest.raises(PermanentError, match="invalid tenant id"):
            await store.ensure_tenant(bad)
        with pytest.raises(PermanentError, match="invalid tenant id"):
            await store.search(bad, "q", [], options())
        with pytest.raises(PermanentError, match="invalid tenant id"):
            await store.upsert_document(bad, "doc", "sha", chunks("doc", ["x"]))
        with pytest.raises(PermanentError, match="invalid tenant id"):
            await store.delete_document(bad, "doc")
        with pytest.raises(PermanentError, match="invalid tenant id"):
            await store.document_sha256(bad, "doc")


async def test_invalid_data_is_a_permanent_error(store: ChunkStore) -> None:
    t = tenant("invalid")
    await store.upsert_document(t, "doc", "sha", chunks("doc", TEXTS, seed=14))
    # The index has dimension 384: Weaviate rejects an 8-dimensional vector.
    with pytest.raises(PermanentError, match="dimension"):
        await store.upsert_document(t, "small", "sha", chunks("small", ["tiny vector"], dim=8))
    with pytest.raises(PermanentError):
        await store.search(t, "", unit(1, 8), options(alpha=1.0))
    # Checked before anything is sent.
    mixed = chunks("mixed", ["a", "b"])
    mixed[1].vector[:] = unit(3, 8)
    with pytest.raises(PermanentError, match="dimensions"):
        await store.upsert_document(t, "mixed", "sha", mixed)
    gap = chunks("gap", ["a", "b"])
    gap[1].chunk.chunk_index = 5
    with pytest.raises(PermanentError, match="chunk indexes"):
        await store.upsert_document(t, "gap", "sha", gap)
    with pytest.raises(PermanentError, match="alpha"):
        await store.search(t, "Kafka", unit(1), options(alpha=1.5))
    with pytest.raises(PermanentError, match="neither"):
        await store.search(t, "  ", [], options())
    assert await store.count_objects(t) == 3  # nothing of the rejected writes landed


async def test_tenants_and_schema_are_idempotent(store: ChunkStore, weaviate: str, test_stack: Stack) -> None:
    t = tenant("idem")
    await store.ensure_tenant(t)
    await store.ensure_tenant(t)
    again = await connect_store(weaviate, test_stack.weaviate.grpc_port, collection=COLLECTION)
    try:
        await again.ensure_tenant(t)  # fresh cache, existing tenant
        await again.ensure_schema()
        await again.upsert_document(t, "doc", "sha", chunks("doc", TEXTS, seed=15))
        assert await store.count_objects(t) == 3
    finally:
        await again.close()


def _grpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _http(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://127.0.0.1/v1/schema"))


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__context__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (WeaviateConnectionError("refused"), True),
        (WeaviateTimeoutError("read"), True),
        (WeaviateGRPCUnavailableError("1.35.2", ("127.0.0.1", 1)), True),
        (WeaviateRetryError("UNAVAILABLE", 3), True),
        (UnexpectedStatusCodeError("schema", _http(503)), True),
        (UnexpectedStatusCodeError("schema", _http(500)), True),
        (UnexpectedStatusCodeError("schema", _http(429)), True),
        (UnexpectedStatusCodeError("schema", _http(422)), False),
        (UnexpectedStatusCodeError("schema", _http(404)), False),
        (InsufficientPermissionsError(_http(403)), False),
        (UnexpectedStatusCodeError("search", _grpc_error(grpc.StatusCode.UNAVAILABLE, "down")), True),
        (UnexpectedStatusCodeError("search", _grpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad")), False),
        (_grpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), True),
        (_grpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"), True),
        (_grpc_error(grpc.StatusCode.UNKNOWN, "vector lengths don't match"), False),
        (WeaviateQueryError('tenant not found: "x"', "GRPC search"), False),
        (WeaviateQueryError("vector lengths don't match", "GRPC search"), False),
        (_chained(WeaviateQueryError("failed", "GRPC search"), WeaviateRetryError("x", 5)), True),
        (
            _chained(
                WeaviateQueryError("lost", "GRPC search"),
                _grpc_error(grpc.StatusCode.UNAVAILABLE, "Connection refused"),
            ),
            True,
        ),
        (WeaviateDeleteManyError("[UNAVAILABLE] failed to connect to all addresses"), True),
        (WeaviateDeleteManyError("[UNKNOWN] tenant not found"), False),
        (_chained(WeaviateStartUpError("Could not connect"), WeaviateConnectionError("refused")), True),
        (WeaviateStartUpError("Weaviate version 1.20.0 is not supported"), False),
        (httpx.ConnectError("All connection attempts failed"), True),
        (httpx.ReadTimeout("slow"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (RetryableError("later"), True),
        (PermanentError("never"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_weaviate_transient_classifies_failures(exc: BaseException, transient: bool) -> None:
    assert is_weaviate_transient(exc) is transient


async def test_connect_to_a_closed_port_is_retryable_after_the_budget() -> None:
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(RetryableError, match="connect"):
        await connect_store(f"http://127.0.0.1:{port}", closed_port(), retry=FAST_FAIL)
    assert time.monotonic() - started < 10


async def test_calls_when_grpc_is_down_are_retryable_after_the_budget(
    weaviate: str, store: ChunkStore
) -> None:
    """REST answers but the gRPC port is closed: the client's own 1-2-4-8 s retries are cut short."""
    port = int(weaviate.rsplit(":", 1)[1])
    client = weaviate_client_with_grpc_port(port, closed_port())
    await client.connect()
    broken = ChunkStore(client, COLLECTION, retry=FAST_FAIL)
    t = tenant("down")
    await store.upsert_document(t, "doc", "sha", chunks("doc", TEXTS))  # through the working store
    try:
        for call in (
            lambda: broken.search(t, "Kafka", unit(1), options(alpha=0.5)),
            lambda: broken.document_sha256(t, "doc"),
            lambda: broken.upsert_document(t, "doc", "sha", chunks("doc", TEXTS)),
            lambda: broken.delete_document(t, "doc"),
        ):
            started = time.monotonic()
            with pytest.raises(RetryableError):
                await call()
            assert time.monotonic() - started < 8
    finally:
        await broken.close()


def weaviate_client_with_grpc_port(http_port: int, grpc_port: int) -> weaviate.WeaviateAsyncClient:
    return weaviate.use_async_with_custom(
        http_host="127.0.0.1",
        http_port=http_port,
        http_secure=False,
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        grpc_secure=False,
        skip_init_checks=True,  # the gRPC health check would fail right away
    )
