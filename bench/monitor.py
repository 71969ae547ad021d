"""Monitor sink throughput: QueryAnswered events/s from Kafka into ClickHouse (chdb).

Variant A: one monitor process (`python -m services.monitor`, embedded chdb, its default batch of
500 records) started on a private Kafka whose llmops.query.answered.v1 already holds the events;
events/s = records committed by the monitor's group per second, from the first commit to the last
(process start-up and the consumer group join are left out). At the end the monitor's gRPC API must
report every request exactly once.
Variant B: the same events decoded, scored (groundedness), turned into rows and inserted in batches of
the same size by MonitorStore into chdb in one process: the sink without Kafka, FastStream and the
EventGuard.

Payloads are realistic: a 12-word question, a 2-sentence answer citing one of five ~60-word retrieved
chunks (about 2.6 KB per event), token usage, model and template versions and five stage timings.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from llmops.query.v1.events_pb2 import QueryAnswered
from llmops.query.v1.query_pb2 import Citation, RetrievedChunk, StageTiming, TokenUsage

from bench.embedding import make_texts
from bench.report import Row, rate, status
from services.cli.stack import service_process
from services.monitor import domain
from services.monitor.quality import groundedness
from services.monitor.redaction import RedactionPolicy
from services.monitor.settings import MonitorSettings
from services.monitor.store import MonitorStore
from shared.clickhouse import ChdbClickHouse
from shared.events import event_headers, new_meta
from shared.infra.stack import Stack
from shared.topics import QUERY_ANSWERED

PORT_BASE = 37000  # others: 19000 (make run), 29000 (tests), 33000-36000 (other benchmarks)
TENANT = "bench"
BATCH = MonitorSettings().max_batch_records
STUB: Any = pb_grpc.MonitorServiceStub  # grpcio-tools writes no types for *_pb2_grpc


def make_events(count: int) -> list[QueryAnswered]:
    texts = make_texts(200)
    events = []
    for i in range(count):
        chunks = [texts[(i + k) % len(texts)] for k in range(5)]
        first_sentence = chunks[0].split(". ")[0] + "."
        event = QueryAnswered(
            meta=new_meta(tenant_id=TENANT, producer="generator"),
            question=f"What does the record number {i} say about the replicated partition leader election?",
            answer=f"{first_sentence} [1] The remaining passages do not say more about it.",
            citations=[Citation(marker=1, chunk_id=f"chunk-{i % 200}", document_id=f"doc-{i % 200}")],
            context=[
                RetrievedChunk(
                    chunk_id=f"chunk-{(i + k) % 200}",
                    document_id=f"doc-{(i + k) % 200}",
                    text=text,
                    source_uri=f"bench://doc-{(i + k) % 200}",
                    score=1.0 - k / 10,
                )
                for k, text in enumerate(chunks)
            ],
            usage=TokenUsage(prompt_tokens=420, completion_tokens=31),
            model_name="tiny_llm",
            model_version="1",
            prompt_template_id="grounded_qa",
            prompt_template_version="v2",
            timings=[
                StageTiming(stage=stage, duration_ms=ms)
                for stage, ms in (("embed", 4.1), ("retrieve", 12.7), ("queue", 1.2), ("first_token", 28.0))
            ]
            + [StageTiming(stage="generate", duration_ms=150.0 + i % 50)],
        )
        events.append(event)
    return events


async def _produce(bootstrap: str, events: list[QueryAnswered]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=262144)
    await producer.start()
    try:
        sends = [
            await producer.send(
                QUERY_ANSWERED.name,
                e.SerializeToString(),
                key=e.meta.correlation_id.encode(),
                headers=[(k, v.encode()) for k, v in event_headers(e).items()],
            )
            for e in events
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str) -> tuple[int, int]:
    """(records committed by `group`, records in the topic) on llmops.query.answered.v1."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(QUERY_ANSWERED.name, p) for p in range(QUERY_ANSWERED.partitions)]
        ends = await consumer.end_offsets(partitions)
        committed = 0
        for tp in partitions:
            committed += await consumer.committed(tp) or 0
        return committed, sum(ends.values())
    finally:
        await consumer.stop()


async def _count_rows(target: str) -> int:
    window = pb.TimeWindow()
    window.start.FromSeconds(int(time.time()) - 86400)
    async with grpc.aio.insecure_channel(target) as channel:
        response = await STUB(channel).GetTraffic(
            pb.GetTrafficRequest(tenant_id=TENANT, window=window, bucket_seconds=86400), timeout=60
        )
    return int(response.requests)


def _sink_run(stack: Stack, state_dir: Path, run: int) -> tuple[float, int]:
    """Start a fresh monitor (new group, new chdb folder) over the filled topic; events/s and rows."""
    group = f"bench-monitor-{run}-{uuid.uuid4().hex[:6]}"
    grpc_port = PORT_BASE + 55 + run
    proc = service_process(
        stack,
        "monitor",
        grpc_port=grpc_port,
        env={
            "LLMOPS_MONITOR_CONSUMER_GROUP": group,
            "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(state_dir / f"chdb-{run}"),
            "LLMOPS_MONITOR_LOG_LEVEL": "WARNING",
        },
        start_timeout_s=300,
    )
    bootstrap = stack.kafka.bootstrap_servers
    proc.start(wait=False)  # the consumers start before gRPC reports SERVING: measure from the launch
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            committed, total = asyncio.run(_committed(bootstrap, group))
            now = time.perf_counter()
            if first is None and committed > 0:
                first = (now, committed)
            if committed >= total:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the monitor did not catch up within 900 s")
        assert first is not None
        elapsed = now - first[0]
        events_per_s = (total - first[1]) / elapsed if elapsed > 0 else float("inf")
        proc.wait_healthy()
        rows = asyncio.run(_count_rows(f"127.0.0.1:{grpc_port}"))
        if rows != total:
            raise RuntimeError(f"monitor stored {rows} requests for {total} events")
        return events_per_s, rows
    finally:
        proc.stop()


def _raw_sink(events: list[QueryAnswered], path: Path) -> float:
    """events/s of decode + score + rows + MonitorStore.insert_requests in batches, in this process."""
    payloads = [e.SerializeToString() for e in events]
    store = MonitorStore(ChdbClickHouse(path))
    policy = RedactionPolicy()
    try:
        store.create_schema()
        started = time.perf_counter()
        for offset in range(0, len(payloads), BATCH):
            now = datetime.now(UTC)
            rows = []
            for body in payloads[offset : offset + BATCH]:
                event = QueryAnswered()
                event.ParseFromString(body)
                score = groundedness(event.answer, [c.text for c in event.context])
                rows.append(domain.answered_row(event, groundedness=score, redaction=policy, received_at=now))
            store.insert_requests(rows)
        elapsed = time.perf_counter() - started
        if store.count_rows("requests") != len(events):
            raise RuntimeError("raw sink lost rows")
        return len(events) / elapsed
    finally:
        store.close()


def run_monitor(events: int = 20_000, repeats: int = 2) -> tuple[list[Row], dict[str, Any]]:
    batch = make_events(events)
    payload_bytes = statistics.mean(len(e.SerializeToString()) for e in batch[:200])
    monitor_rates: list[float] = []
    raw_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-monitor-") as state_dir:
        state = Path(state_dir)
        stack = Stack(state / "stack", port_base=PORT_BASE, components=("kafka",))
        try:
            status(f"monitor: starting Kafka, producing {events:,} QueryAnswered events")
            stack.up()
            asyncio.run(_produce(stack.kafka.bootstrap_servers, batch))
            # Alternate: A (monitor process over the filled topic), B (raw sink), A, B, ...
            for rep in range(repeats):
                sink_rate, rows = _sink_run(stack, state, rep)
                monitor_rates.append(sink_rate)
                status(
                    f"monitor: run {rep + 1}/{repeats} monitor process: {sink_rate:,.0f} ev/s ({rows} rows)"
                )
                raw = _raw_sink(batch, state / f"raw-{rep}")
                raw_rates.append(raw)
                status(f"monitor: run {rep + 1}/{repeats} raw sink: {raw:,.0f} ev/s")
        finally:
            stack.down()
    a, b = statistics.median(monitor_rates), statistics.median(raw_rates)
    notes = (
        f"QueryAnswered ~{payload_bytes:,.0f} B (5 chunks of ~60 words, 5 timings), N={events:,} per run, "
        f"median of {repeats} (A runs {', '.join(f'{r:,.0f}' for r in monitor_rates)}; B runs "
        f"{', '.join(f'{r:,.0f}' for r in raw_rates)}); A = one monitor process, chdb, batches of {BATCH}, "
        "events/s between first and last commit, every request stored once (checked over gRPC); B = decode, "
        f"groundedness, rows and insert_requests in one process; {os.cpu_count()} CPUs shared with Kafka"
    )
    row = Row(
        "monitor sink (QueryAnswered -> chdb)",
        f"monitor {rate(a)}",
        f"raw sink {rate(b)}",
        f"{a / b:.2f}",
        notes,
    )
    return [row], {
        "events": events,
        "payload_bytes": payload_bytes,
        "monitor_ev_per_s": monitor_rates,
        "raw_ev_per_s": raw_rates,
    }


if __name__ == "__main__":
    from bench.report import markdown_table

    rows, raw_numbers = run_monitor(events=int(os.environ.get("BENCH_MONITOR_EVENTS", "20000")))
    print(markdown_table(rows))
    print(raw_numbers)
