"""Ingestion through the running services vs the embedding model alone.

Variant A: documents/s from DocumentIngestRequested on Kafka to DocumentIndexed, through the embedder
and retriever running as separate processes on a private Kafka and Weaviate (the whole pipeline:
decode, chunk, embed, publish, index in Weaviate, confirm).
Variant B: documents/s of the same model (ONNX Runtime, the embedder's default backend) embedding
the same chunk texts with the same batch size in one process, with the services stopped.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import DocumentIndexed, DocumentIngestRequested

from bench.bus import start_at_end
from bench.embedding import make_texts, raw_throughput
from bench.report import Row, status
from services.cli.stack import service_process
from services.embedder.chunking import Chunker, load_tokenizer
from services.embedder.embedding import load_embedder
from services.embedder.settings import EmbedderSettings
from shared.events import event_headers, new_meta
from shared.infra.process import ManagedProcess
from shared.infra.stack import Stack
from shared.topics import DOCUMENT_INDEXED, INGEST_REQUESTED

PORT_BASE = 35000
TENANT = "bench"
BATCH_SIZE = EmbedderSettings().batch_size


def _service(stack: Stack, name: str, grpc_port: int) -> ManagedProcess:
    return service_process(
        stack,
        name,
        grpc_port=grpc_port,
        env={
            "LLMOPS_WEAVIATE_COLLECTION": "BenchChunk",
            "LLMOPS_TENANTS_KNOWN": TENANT,
            f"LLMOPS_{name.upper()}_LOG_LEVEL": "WARNING",
        },
        start_timeout_s=300,
    )


def _documents(texts: list[str], run: str) -> list[DocumentIngestRequested]:
    return [
        DocumentIngestRequested(
            meta=new_meta(tenant_id=TENANT, producer="bench"),
            document=Document(document_id=f"{run}-{i}", source_uri=f"bench://{run}/{i}", content=t.encode()),
        )
        for i, t in enumerate(texts)
    ]


async def _pipeline_docs_per_s(bootstrap: str, events: list[DocumentIngestRequested]) -> float:
    """Publish the events, wait for every DocumentIndexed; documents/s from first send to last confirm."""
    wanted = {e.meta.correlation_id for e in events}
    consumer = AIOKafkaConsumer(
        DOCUMENT_INDEXED.name, bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    try:
        await start_at_end(consumer)
        started = time.perf_counter()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            sends = [
                await producer.send(
                    INGEST_REQUESTED.name,
                    e.SerializeToString(),
                    key=f"{TENANT}/{e.document.document_id}".encode(),
                    headers=[(k, v.encode()) for k, v in event_headers(e).items()],
                )
                for e in events
            ]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        deadline = started + 600
        while wanted and time.perf_counter() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    indexed = DocumentIndexed()
                    indexed.ParseFromString(record.value)
                    wanted.discard(indexed.meta.correlation_id)
        if wanted:
            raise RuntimeError(f"{len(wanted)} documents not indexed within 600 s")
        return len(events) / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def run_ingest(docs: int = 600, repeats: int = 2) -> tuple[list[Row], dict[str, Any]]:
    texts = make_texts(docs)
    settings = EmbedderSettings()
    chunker = Chunker(load_tokenizer(), settings.chunk_tokens, settings.overlap_tokens)
    chunk_texts = [c.text for t in texts for c in chunker.split(t)]
    pipeline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-ingest-") as state_dir:
        stack = Stack(Path(state_dir), port_base=PORT_BASE, components=("kafka", "weaviate"))
        services = [_service(stack, "embedder", PORT_BASE + 52), _service(stack, "retriever", PORT_BASE + 53)]
        try:
            status("ingest: starting Kafka, Weaviate, embedder and retriever")
            stack.up()
            for proc in services:
                proc.start(wait=False)
            for proc in services:
                proc.wait_healthy()
            asyncio.run(_pipeline_docs_per_s(stack.kafka.bootstrap_servers, _documents(texts[:64], "warmup")))
            for rep in range(repeats):
                rate = asyncio.run(
                    _pipeline_docs_per_s(stack.kafka.bootstrap_servers, _documents(texts, f"r{rep}"))
                )
                pipeline.append(rate)
                status(f"ingest: run {rep + 1}/{repeats} through the services: {rate:,.1f} documents/s")
        finally:
            for proc in services:
                proc.stop()
            stack.down()
    status("ingest: raw embedding of the same chunks in one process")
    embedder = load_embedder("onnx", BATCH_SIZE)
    embedder.embed(chunk_texts[:BATCH_SIZE])
    raw_rates = [
        raw_throughput(embedder, chunk_texts, BATCH_SIZE) * docs / len(chunk_texts) for _ in range(repeats)
    ]
    service_rate, raw_rate = statistics.median(pipeline), statistics.median(raw_rates)
    notes = (
        f"{docs} documents ({len(chunk_texts)} chunks) per run, median of {repeats}; embedder (ONNX, batch "
        f"{BATCH_SIZE}, {settings.max_batch_records} records per Kafka batch) and retriever as processes, "
        "sharing the 2 cores with Kafka, Weaviate and each other; B embeds the same chunk texts alone"
    )
    row = Row(
        "ingestion (docs/s)",
        f"services {service_rate:,.1f} docs/s",
        f"raw embedding {raw_rate:,.1f} docs/s",
        f"{service_rate / raw_rate:.2f}",
        notes,
    )
    raw = {
        "docs": docs,
        "chunks": len(chunk_texts),
        "pipeline_docs_per_s": pipeline,
        "raw_docs_per_s": raw_rates,
    }
    return [row], raw
