"""Retrieval benchmark: Weaviate HNSW top-10 against exact search, queries/s, import rate.

Starts its own single-node Weaviate with the project's scripts (ports from 34000: HTTP 34080, gRPC
34051, cluster 34060-34063), creates the retriever's collection through `ChunkStore` (the schema the
service uses: multi-tenant, self-provided vectors, HNSW cosine) and imports `vectors` chunks into one
tenant with `ChunkStore.upsert_document` (gRPC BatchObjects, 200 objects per request, documents of
500 chunks, two documents in flight).

The vectors are synthetic but structured like embeddings: unit vectors scattered around 500 gaussian
cluster centres, so nearest neighbours are a few close points in a crowd of similar ones rather than
uniform noise (on which every ANN index looks bad) or exact duplicates (on which it looks perfect).
Queries are data points moved by noise, the way a question lands near, not on, its passage.

Measured:
- recall@10 of `near_vector` (limit 10) against numpy brute-force cosine top-10, for several HNSW
  `ef` values set on the collection (ef is a mutable collection setting); the reported setting is
  the store's default (dynamic ef: limit * 8 clamped to 100..500, so 100 for top-10) when it reaches
  recall >= 0.95, else the cheapest ef that does (the largest tried if none does);
- queries/s of near_vector at that ef, sequentially and with 8 queries in flight (asyncio);
- queries/s of the retriever's own `ChunkStore.search` (relative-score fusion) in its three modes:
  hybrid alpha 0.5, vector only, BM25 only;
- import rate (chunks/s, wall clock, HNSW built inline).

All of it shares the machine's CPUs with the server: on a small machine the client's own work is a
large part of each query and "8 in flight" mostly measures contention.

`python -m bench.retrieval [--vectors N --dim D --queries Q]` prints the table; `run()` returns the
rows as dicts (benchmark, a_label, a_value, b_label, b_value, ratio, notes).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from llmops.ingest.v1.document_pb2 import Chunk, EmbeddedChunk
from llmops.query.v1.query_pb2 import RetrievalOptions
from weaviate.classes.config import Reconfigure

from bench.report import Row, markdown_table, status
from services.retriever.store import ChunkStore, RetryBudget, chunk_uuid, connect_store, deletions_collection
from shared.infra.stack import Stack

PORT_BASE = 34000  # other stacks on this machine: 19000 (make run), 29000 (tests), 33000 (bus bench)
COLLECTION = "BenchChunk"
TENANT = "bench"
CLUSTERS = 500
# Norm of a point's offset from its centre, and of a query's from its data point: a query's best
# match scores ~0.78 cosine, its 10th ~0.30, unrelated chunks ~0.0-0.1, as with MiniLM sentence
# embeddings; same-cluster points score ~0.3 with each other.
SPREAD = 1.5
QUERY_NOISE = 0.8
CHUNKS_PER_DOC = 500
IMPORT_CONCURRENCY = 2
QUERY_CONCURRENCY = 8
K = 10
EF_SWEEP = (-1, 16, 32, 64, 128, 256)  # -1: Weaviate's dynamic ef (limit * 8, clamped to 100..500)
TARGET_RECALL = 0.95
VOCABULARY = 20_000
WORDS_PER_CHUNK = 24


Matrix = npt.NDArray[np.float32]
Indexes = npt.NDArray[np.int64]
Call = Callable[[], Awaitable[Any]]


def _normalize(matrix: npt.NDArray[Any]) -> Matrix:
    normalized: Matrix = (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)
    return normalized


def clustered_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> Matrix:
    centres = _normalize(rng.standard_normal((CLUSTERS, dim)))
    members = rng.integers(0, CLUSTERS, size=n)
    offsets = rng.standard_normal((n, dim)).astype(np.float32) * (SPREAD / np.sqrt(dim))
    return _normalize(centres[members] + offsets)


def perturbed_queries(data: Matrix, count: int, rng: np.random.Generator) -> tuple[Matrix, Indexes]:
    picks: Indexes = rng.choice(len(data), size=count, replace=False)
    dim = data.shape[1]
    noise = rng.standard_normal((count, dim)).astype(np.float32) * (QUERY_NOISE / np.sqrt(dim))
    return _normalize(data[picks] + noise), picks


def exact_top_k(data: Matrix, queries: Matrix, k: int) -> Indexes:
    """Brute-force cosine top-k (vectors are unit length, so cosine is the dot product)."""
    scores = queries @ data.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    ranked: Indexes = np.take_along_axis(top, order, axis=1)
    return ranked


def synthetic_texts(n: int, rng: np.random.Generator) -> list[str]:
    """Zipf-distributed words, so BM25 sees a few very common terms and a long tail."""
    ranks = (rng.zipf(1.3, size=(n, WORDS_PER_CHUNK)) - 1) % VOCABULARY + 1  # tail folded back
    return [" ".join(f"w{r}" for r in row) for row in ranks]


def _content_words(text: str, n: int = 4) -> str:
    """A query's words: the chunk's n rarest words, as a question shares its passage's content words."""
    words = sorted(set(text.split()), key=lambda w: int(w[1:]), reverse=True)
    return " ".join(words[:n])


def _document_id(row: int) -> str:
    return f"doc-{row // CHUNKS_PER_DOC:05d}"


@dataclass
class Workload:
    data: Matrix
    texts: list[str]
    queries: list[list[float]]
    query_texts: list[str]
    exact: list[set[int]]
    exact_s: float
    uuid_to_row: dict[str, int]


def make_workload(vectors: int, dim: int, queries: int) -> Workload:
    rng = np.random.default_rng(42)
    data = clustered_unit_vectors(vectors, dim, rng)
    query_vectors, picks = perturbed_queries(data, queries, rng)
    texts = synthetic_texts(vectors, rng)
    started = time.perf_counter()
    exact = exact_top_k(data, query_vectors, K)
    exact_s = time.perf_counter() - started
    return Workload(
        data=data,
        texts=texts,
        queries=[q.tolist() for q in query_vectors],
        query_texts=[_content_words(texts[int(i)]) for i in picks],
        exact=[set(row.tolist()) for row in exact],
        exact_s=exact_s,
        uuid_to_row={chunk_uuid(TENANT, _document_id(r), r % CHUNKS_PER_DOC): r for r in range(vectors)},
    )


def _documents(data: Matrix, texts: Sequence[str]) -> list[tuple[str, list[EmbeddedChunk]]]:
    documents = []
    for start in range(0, len(data), CHUNKS_PER_DOC):
        doc_id = _document_id(start)
        chunks = [
            EmbeddedChunk(
                chunk=Chunk(
                    chunk_id=f"{doc_id}:{i}",
                    document_id=doc_id,
                    chunk_index=i,
                    text=texts[start + i],
                    source_uri=f"bench://{doc_id}",
                    metadata={"row": str(start + i)},
                ),
                vector=data[start + i].tolist(),
            )
            for i in range(min(CHUNKS_PER_DOC, len(data) - start))
        ]
        documents.append((doc_id, chunks))
    return documents


async def _import(store: ChunkStore, work: Workload) -> float:
    """Import every chunk with upsert_document, IMPORT_CONCURRENCY documents in flight; wall seconds."""
    queue: asyncio.Queue[tuple[str, list[EmbeddedChunk]]] = asyncio.Queue()
    for document in _documents(work.data, work.texts):
        queue.put_nowait(document)
    total = len(work.data)
    done = 0
    started = time.perf_counter()
    last_report = started

    async def worker() -> None:
        nonlocal done, last_report
        while not queue.empty():
            doc_id, chunks = queue.get_nowait()
            done += await store.upsert_document(TENANT, doc_id, f"sha-{doc_id}", chunks)
            now = time.perf_counter()
            if now - last_report >= 5 or done == total:
                last_report = now
                status(f"imported {done:,}/{total:,} chunks ({done / (now - started):,.0f}/s)")

    await asyncio.gather(*(worker() for _ in range(IMPORT_CONCURRENCY)))
    return time.perf_counter() - started


async def _timed(calls: Sequence[Call], concurrency: int) -> tuple[list[Any], float, list[float]]:
    """Run the calls with `concurrency` in flight; results in order, wall seconds, per-call latencies."""
    results: list[Any] = [None] * len(calls)
    latencies: list[float] = [0.0] * len(calls)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(calls):
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            results[i] = await calls[i]()
            latencies[i] = time.perf_counter() - t0

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - started, latencies


def _ms(latencies: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1000, q))


@dataclass
class Measured:
    chosen_ef: int = -1
    recall: float = 0.0
    sweep: dict[int, dict[str, float]] = field(default_factory=dict)
    seq_qps: float = 0.0
    seq_lat: list[float] = field(default_factory=list)
    conc_qps: float = 0.0
    conc_lat: list[float] = field(default_factory=list)
    # store.search, sequential: mode -> (q/s, per-query latencies)
    search: dict[str, tuple[float, list[float]]] = field(default_factory=dict)
    import_s: float = 0.0


async def _measure_near_vector(store: ChunkStore, work: Workload, out: Measured) -> None:
    collection = store.client.collections.use(store.name)
    tenant = collection.with_tenant(TENANT)

    def call(vector: list[float]) -> Call:
        async def near_vector() -> Any:
            return await tenant.query.near_vector(near_vector=vector, limit=K, return_properties=[])

        return near_vector

    calls = [call(q) for q in work.queries]

    def recall(results: Sequence[Any]) -> float:
        found = [{work.uuid_to_row[str(obj.uuid)] for obj in result.objects} for result in results]
        return float(statistics.fmean(len(f & e) / K for f, e in zip(found, work.exact, strict=True)))

    async def set_ef(ef: int) -> None:
        await collection.config.update(
            vector_config=Reconfigure.Vectors.update(
                name="default", vector_index_config=Reconfigure.VectorIndex.hnsw(ef=ef)
            )
        )

    for ef in EF_SWEEP:
        await set_ef(ef)
        await _timed(calls[:20], 1)  # warm-up
        results, wall, lat = await _timed(calls, 1)
        out.sweep[ef] = {"recall": recall(results), "qps": len(calls) / wall, "p50_ms": _ms(lat, 50)}
        status(f"ef={ef}: recall@{K} {out.sweep[ef]['recall']:.3f}, {out.sweep[ef]['qps']:,.0f} q/s")
    # The store's default (dynamic ef) when it reaches the target, else the cheapest ef that does.
    passing = [ef for ef in EF_SWEEP if out.sweep[ef]["recall"] >= TARGET_RECALL]
    out.chosen_ef = passing[0] if passing else EF_SWEEP[-1]
    await set_ef(out.chosen_ef)
    results, wall, out.seq_lat = await _timed(calls, 1)
    out.recall, out.seq_qps = recall(results), len(calls) / wall
    _, wall, out.conc_lat = await _timed(calls, QUERY_CONCURRENCY)
    out.conc_qps = len(calls) / wall
    status(f"ef={out.chosen_ef}: {out.seq_qps:,.0f} q/s sequential, {out.conc_qps:,.0f} q/s concurrent")


SEARCH_MODES = {  # store.search as the retriever calls it: (uses text, uses vector, alpha)
    "hybrid": (True, True, 0.5),
    "vector": (False, True, 1.0),
    "bm25": (True, False, 0.0),
}


async def _measure_search(store: ChunkStore, work: Workload, out: Measured) -> None:
    def call(text: str, vector: list[float], options: RetrievalOptions) -> Call:
        async def search() -> Any:
            return await store.search(TENANT, text, vector, options)

        return search

    for mode, (with_text, with_vector, alpha) in SEARCH_MODES.items():
        options = RetrievalOptions(top_k=K, alpha=alpha)
        calls = [
            call(t if with_text else "", q if with_vector else [], options)
            for t, q in zip(work.query_texts, work.queries, strict=True)
        ]
        await _timed(calls[:20], 1)  # warm-up
        _, wall, latencies = await _timed(calls, 1)
        out.search[mode] = (len(calls) / wall, latencies)
        status(f"store.search {mode}: {len(calls) / wall:,.0f} q/s sequential")


def _rows(work: Workload, m: Measured, vectors: int, dim: int, queries: int) -> list[dict[str, Any]]:
    ef_label = "dynamic" if m.chosen_ef == -1 else str(m.chosen_ef)
    sweep = ", ".join(
        f"ef {'dyn' if ef == -1 else ef}: {v['recall']:.3f} @ {v['qps']:,.0f} q/s"
        for ef, v in m.sweep.items()
    )
    exact_qps = queries / work.exact_s
    (hybrid_qps, hybrid_lat), (vector_qps, vector_lat), (bm25_qps, bm25_lat) = (
        m.search[mode] for mode in ("hybrid", "vector", "bm25")
    )
    return [
        {
            "benchmark": f"weaviate recall@{K}, {vectors:,} x {dim}d, {CLUSTERS} clusters",
            "a_label": f"HNSW near_vector (ef={ef_label})",
            "a_value": round(m.recall, 4),
            "b_label": "exact (numpy brute force)",
            "b_value": 1.0,
            "ratio": round(m.recall, 4),
            "notes": f"ef set on the collection; sweep {sweep}; efConstruction 128, maxConnections 32",
        },
        {
            "benchmark": f"weaviate near_vector q/s (top-{K}, ef={ef_label})",
            "a_label": f"{QUERY_CONCURRENCY} in flight",
            "a_value": round(m.conc_qps, 1),
            "b_label": "sequential",
            "b_value": round(m.seq_qps, 1),
            "ratio": round(m.conc_qps / m.seq_qps, 2),
            "notes": f"p50 {_ms(m.seq_lat, 50):.2f} ms / p95 {_ms(m.seq_lat, 95):.2f} ms sequential, "
            f"p50 {_ms(m.conc_lat, 50):.2f} ms with {QUERY_CONCURRENCY} in flight; async client, gRPC",
        },
        {
            "benchmark": f"retriever store.search q/s, sequential, top-{K}",
            "a_label": "hybrid alpha 0.5",
            "a_value": round(hybrid_qps, 1),
            "b_label": "vector only",
            "b_value": round(vector_qps, 1),
            "ratio": round(hybrid_qps / vector_qps, 2),
            "notes": f"relativeScore fusion; query text = the passage's 4 rarest (Zipf) words; "
            f"BM25 only {bm25_qps:,.0f} q/s; p50 hybrid {_ms(hybrid_lat, 50):.2f} ms, "
            f"vector {_ms(vector_lat, 50):.2f} ms, BM25 {_ms(bm25_lat, 50):.2f} ms",
        },
        {
            "benchmark": f"weaviate import, {vectors:,} chunks",
            "a_label": "chunks/s (upsert_document)",
            "a_value": round(vectors / m.import_s, 1),
            "b_label": "wall s",
            "b_value": round(m.import_s, 1),
            "ratio": "",
            "notes": f"gRPC batches of 200, {IMPORT_CONCURRENCY} documents of {CHUNKS_PER_DOC} in flight, "
            "HNSW built inline",
        },
        {
            "benchmark": f"exact top-{K} for {queries} queries",
            "a_label": "numpy brute force q/s",
            "a_value": round(exact_qps, 1),
            "b_label": "weaviate near_vector q/s",
            "b_value": round(m.seq_qps, 1),
            "ratio": round(exact_qps / m.seq_qps, 2),
            "notes": "in-process: one matrix product over all vectors for the whole query batch; for scale",
        },
    ]


async def _bench(
    stack: Stack, vectors: int, dim: int, queries: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    work = make_workload(vectors, dim, queries)
    measured = Measured()
    store = await connect_store(
        stack.weaviate.url,
        stack.weaviate.grpc_port,
        collection=COLLECTION,
        retry=RetryBudget(attempt_timeout_s=120.0, max_delay_s=60.0),
    )
    try:
        await store.ensure_tenant(TENANT)
        status(f"importing {vectors:,} chunks of dim {dim} ({CLUSTERS} clusters) into tenant {TENANT!r}")
        measured.import_s = await _import(store, work)
        stored = await store.count_objects(TENANT)
        if stored != vectors:
            raise RuntimeError(f"imported {vectors} chunks but the tenant holds {stored}")
        await _measure_near_vector(store, work, measured)
        await _measure_search(store, work, measured)
        await store.client.collections.delete([COLLECTION, deletions_collection(COLLECTION)])
    finally:
        await store.close()
    raw = {
        "vectors": vectors,
        "dim": dim,
        "queries": queries,
        "chosen_ef": measured.chosen_ef,
        "recall": measured.recall,
        "sweep": {str(ef): v for ef, v in measured.sweep.items()},
        "import_s": measured.import_s,
        "seq_qps": measured.seq_qps,
        "concurrent_qps": measured.conc_qps,
        "search_qps": {mode: qps for mode, (qps, _) in measured.search.items()},
        "exact_s": work.exact_s,
    }
    return _rows(work, measured, vectors, dim, queries), raw


def run(vectors: int = 50_000, dim: int = 384, queries: int = 200) -> list[dict[str, Any]]:
    """Start a private Weaviate, run the benchmark, stop it; the result rows as dicts."""
    rows, _ = run_with_raw(vectors, dim, queries)
    return rows


def run_with_raw(
    vectors: int = 50_000, dim: int = 384, queries: int = 200
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if vectors < K or queries < 1 or queries > vectors:
        raise ValueError("need vectors >= 10 and 1 <= queries <= vectors")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmops-bench-weaviate-") as state_dir:
        stack = Stack(state_dir=Path(state_dir), port_base=PORT_BASE, components=("weaviate",))
        status(f"starting Weaviate on {stack.weaviate.url} (gRPC {stack.weaviate.grpc_port})")
        try:
            stack.weaviate.start()
            status(f"Weaviate ready after {time.perf_counter() - started:.1f}s")
            rows, raw = asyncio.run(_bench(stack, vectors, dim, queries))
        finally:
            status("stopping Weaviate")
            stack.weaviate.stop()
    raw["wall_s"] = round(time.perf_counter() - started, 1)
    return rows, raw


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if value < 10 else f"{value:,.0f}"
    return str(value)


def to_rows(rows: Sequence[dict[str, Any]]) -> list[Row]:
    """The dict rows as `bench.report.Row`s, for the Markdown table."""
    return [
        Row(
            benchmark=row["benchmark"],
            variant_a=f"{row['a_label']}: {_cell(row['a_value'])}",
            variant_b=f"{row['b_label']}: {_cell(row['b_value'])}",
            ratio=_cell(row["ratio"]),
            notes=row["notes"],
        )
        for row in rows
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    rows, raw = run_with_raw(args.vectors, args.dim, args.queries)
    print(markdown_table(to_rows(rows)))
    status(f"done in {raw['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
