"""End-to-end latency of a gRPC Query against the sum of the per-stage service times in its answer.

The whole query path runs as separate processes (gateway, embedder, retriever, generator) on a
private Kafka, Weaviate and Triton serving `tiny_llm`. Each sequential Query's wall time at the client
(variant A) is set against the time the stages report spending on it (variant B = embed + retrieve +
generate, from the answer's timings). A / B is the platform's overhead: the Kafka hops between
stages, gRPC, (de)serialisation and waiting in consumers' poll loops.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.ingest.v1.document_pb2 import Document

from bench.report import Row, status
from services.cli.stack import service_process
from services.gateway.auth import issue_key
from shared.infra.stack import Stack

PORT_BASE = 37000
TENANT = "bench"
SERVICES = ("embedder", "retriever", "generator", "gateway")
SERVICE_STAGES = ("embed", "retrieve", "generate")
TOPICS = {
    "kafka": "Kafka stores every topic as partitions of an ordered log.",
    "raft": "Raft elects one leader per term that replicates log entries to a majority.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "hnsw": "HNSW indexes vectors in a layered graph so nearest neighbours are found in log time.",
}
QUESTIONS = [
    "How does Kafka store a topic?",
    "How does Raft pick a leader?",
    "Why does sourdough rise slowly?",
    "How does HNSW find neighbours?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _measure(target: str, api_key: str, queries: int) -> tuple[list[float], list[float]]:
    md = (("x-api-key", api_key),)
    async with grpc.aio.insecure_channel(target) as channel:
        ingest = ingest_grpc.IngestServiceStub(channel)
        for doc_id, text in TOPICS.items():
            document = Document(document_id=doc_id, source_uri=f"bench://{doc_id}", content=text.encode())
            await ingest.Ingest(ingest_pb.IngestRequest(document=document, wait_indexed=True), metadata=md)
        stub = query_grpc.QueryServiceStub(channel)
        for question in QUESTIONS * 3:  # warm-up: connections, caches, JIT-free but lazy imports
            await stub.Query(query_pb.QueryRequest(question=question), metadata=md, timeout=30)
        wall_ms: list[float] = []
        stages_ms: list[float] = []
        for i in range(queries):  # one at a time: latency, not throughput
            started = time.perf_counter()
            response = await stub.Query(
                query_pb.QueryRequest(question=QUESTIONS[i % len(QUESTIONS)]), metadata=md, timeout=30
            )
            wall_ms.append((time.perf_counter() - started) * 1000)
            timings = {t.stage: t.duration_ms for t in response.timings}
            stages_ms.append(sum(timings[s] for s in SERVICE_STAGES))
            if (i + 1) % 50 == 0:
                status(f"e2e: {i + 1}/{queries} queries")
    return wall_ms, stages_ms


def run_e2e(queries: int = 200) -> tuple[list[Row], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="llmops-bench-e2e-") as state_dir:
        stack = Stack(
            Path(state_dir),
            port_base=PORT_BASE,
            components=("kafka", "weaviate", "triton"),
            triton_models=["tiny_llm"],
        )
        keys_file = Path(state_dir) / "api-keys.json"
        api_key = issue_key(keys_file, TENANT)
        env = {
            "LLMOPS_TENANTS_KNOWN": TENANT,
            "LLMOPS_WEAVIATE_COLLECTION": "BenchE2e",
            "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        }
        procs = [
            service_process(
                stack,
                name,
                grpc_port=PORT_BASE + 151 + i,  # clear of the stack's ports (Weaviate gRPC is +51)
                env={**env, f"LLMOPS_{name.upper()}_LOG_LEVEL": "WARNING"},
                start_timeout_s=300,
            )
            for i, name in enumerate(SERVICES)
        ]
        try:
            status("e2e: starting Kafka, Weaviate, Triton and the four query-path services")
            stack.up()
            for proc in procs:
                proc.start(wait=False)
            for proc in procs:
                proc.wait_healthy()
            wall_ms, stages_ms = asyncio.run(_measure(f"127.0.0.1:{PORT_BASE + 154}", api_key, queries))
        finally:
            for proc in procs:
                proc.stop()
            stack.down()
    wall_p50, stages_p50 = statistics.median(wall_ms), statistics.median(stages_ms)
    overhead = [w - s for w, s in zip(wall_ms, stages_ms, strict=True)]
    notes = (
        f"{queries} sequential gRPC Query calls (tiny_llm, 4 documents); A = wall time at the client, "
        f"p99 {percentile(wall_ms, 99):.1f} ms; B = embed + retrieve + generate as the stages report them, "
        f"p99 {percentile(stages_ms, 99):.1f} ms; overhead A - B p50 {statistics.median(overhead):.1f} ms, "
        f"p99 {percentile(overhead, 99):.1f} ms (4 Kafka hops, gRPC, polling)"
    )
    row = Row(
        "query end-to-end latency p50 (ms)",
        f"gRPC Query {wall_p50:.1f}",
        f"sum of stage times {stages_p50:.1f}",
        f"{wall_p50 / stages_p50:.2f}",
        notes,
    )
    raw = {"queries": queries, "wall_ms": wall_ms, "stages_ms": stages_ms}
    return [row], raw
