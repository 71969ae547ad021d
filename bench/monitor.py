"""Monitor sink throughput: QueryAnswered events/s from Kafka into ClickHouse (chdb), and telemetry lag.

Variant A: one monitor process (`python -m services.monitor`, embedded chdb, its default batch of
max_batch_records and its default consumers, members of one group) started on a private Kafka whose
llmops.query.answered.v1 already holds the events;
events/s = records committed by the monitor's group per second, from the first commit to the last
(process start-up and the consumer group join are left out). At the end the monitor's gRPC API must
report every request exactly once.
Variant B: the same events stored in batches of the same size by the path the monitor takes for full
batches (the fast path, services/monitor/native.py: framed records into the ClickHouse engine) in one
process: the sink without Kafka, FastStream and the EventGuard. A second row sets the fast path beside
the per-event path (decode, groundedness, rows and MonitorStore.insert_requests in Python), both in
this process, each run alternating with the other (with the monitor's garbage-collector settings,
services/monitor/__main__.py). A third sets the fast path on these answers beside the same answers
without their sentence support (as a producer that does not judge its answers sends them: the engine
then tokenises answer and chunks).

Telemetry lag, in the same monitor process once it has drained the backlog: events produced at a steady
rate (LAG_RATE/s for LAG_SECONDS, each stamped when it is produced) and, per event, the time from
produce (meta.occurred_at) to its row being stored (the row's `inserted_at`, ClickHouse's now64() at
the insert), read from the chdb folder after the monitor stopped. The backlog run also gives the
consumer lag over time (records not yet committed, polled every 0.05 s, about one sample a second kept).

Payloads are realistic: a 12-word question, a 2-sentence answer citing one of five ~60-word retrieved
chunks (about 3 KB per event), token usage, model and template versions, five stage timings and the
support of each answer sentence in the chunks, as the generator publishes it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from llmops.query.v1.events_pb2 import QueryAnswered
from llmops.query.v1.query_pb2 import Citation, RetrievedChunk, StageTiming, TokenUsage

from bench.embedding import make_texts
from bench.report import Row, rate, status
from services.cli.stack import service_process
from services.generator.domain import answer_support
from services.monitor import domain, native
from services.monitor.__main__ import tune_gc
from services.monitor.redaction import RedactionPolicy
from services.monitor.settings import MonitorSettings
from services.monitor.store import REQUEST_COLUMNS, MonitorStore
from shared.clickhouse import ChdbClickHouse
from shared.events import event_headers, new_meta
from shared.infra.stack import Stack
from shared.topics import QUERY_ANSWERED

PORT_BASE = 37000  # others: 19000 (make run), 29000 (tests), 33000-36000 (other benchmarks)
TENANT = "bench"
LAG_TENANT = "bench-lag"
LAG_RATE = 1000  # events/s in the lag phase: steady traffic well below the sink's capacity
LAG_SECONDS = 15.0
BATCH = MonitorSettings().max_batch_records
# The bench's producers stand in for the generator of a deployment whose consumers all read LZ4
# (LLMOPS_KAFKA_COMPRESSION_TYPE=lz4; the platform's default is none, for clients such as kafkajs).
COMPRESSION = "lz4"
STUB: Any = pb_grpc.MonitorServiceStub  # grpcio-tools writes no types for *_pb2_grpc


def make_event(i: int, texts: list[str], tenant: str = TENANT) -> QueryAnswered:
    """An answer as the generator publishes it, its sentence support included (see _unjudged)."""
    chunks = [texts[(i + k) % len(texts)] for k in range(5)]
    first_sentence = chunks[0].split(". ")[0] + "."
    event = QueryAnswered(
        meta=new_meta(tenant_id=tenant, producer="generator"),
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
    event.sentence_support.extend(answer_support(event.answer, event.context))
    return event


def make_events(count: int, tenant: str = TENANT) -> list[QueryAnswered]:
    texts = make_texts(200)
    return [make_event(i, texts, tenant) for i in range(count)]


def published_headers(event: QueryAnswered) -> dict[str, str]:
    """The headers of the generator's record: the event's own, and what FastStream's publish adds (a
    correlation id, and the W3C trace context of the publishing span)."""
    return {
        **event_headers(event),
        "correlation_id": str(uuid.uuid4()),
        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-03",
    }


async def _send(producer: AIOKafkaProducer, event: QueryAnswered) -> Any:
    return await producer.send(
        QUERY_ANSWERED.name,
        event.SerializeToString(),
        key=event.meta.correlation_id.encode(),
        headers=[(k, v.encode()) for k, v in published_headers(event).items()],
    )


async def produce_events(bootstrap: str, events: list[QueryAnswered]) -> None:
    # The batching of the platform's producers (aiokafka's defaults: up to 16 KiB, no linger), so the
    # monitor reads record batches of the size and compression the generator's would have.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=COMPRESSION)
    await producer.start()
    try:
        await asyncio.gather(*[await _send(producer, e) for e in events])
    finally:
        await producer.stop()


async def _produce_paced(bootstrap: str, tenant: str, rate_per_s: int, seconds: float) -> int:
    """Produce QueryAnswered events of `tenant` at `rate_per_s`, each built (stamped) as it is sent."""
    texts = make_texts(200)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=1, compression_type=COMPRESSION
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    sent, sends = 0, []
    try:
        started = loop.time()
        while (elapsed := loop.time() - started) < seconds:
            while sent < min(int(elapsed * rate_per_s) + 1, int(seconds * rate_per_s)):
                sends.append(await _send(producer, make_event(sent, texts, tenant)))
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return sent


async def _count_rows(target: str, tenant: str = TENANT) -> int:
    window = pb.TimeWindow()
    window.start.FromSeconds(int(time.time()) - 86400)
    async with grpc.aio.insecure_channel(target) as channel:
        response = await STUB(channel).GetTraffic(
            pb.GetTrafficRequest(tenant_id=tenant, window=window, bucket_seconds=86400), timeout=60
        )
    return int(response.requests)


async def _wait_committed(
    bootstrap: str, group: str, timeout_s: float, every_s: float = 0.05
) -> tuple[list[tuple[float, int]], int]:
    """Poll the group's committed offsets (one OffsetFetch per poll) until it has committed every record
    of the topic, or once when `timeout_s` is 0: (seconds since the call, records not yet committed)
    samples, and the records in the topic."""
    partitions = [TopicPartition(QUERY_ANSWERED.name, p) for p in range(QUERY_ANSWERED.partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        total = sum((await consumer.end_offsets(partitions)).values())
        samples: list[tuple[float, int]] = []
        started = time.perf_counter()
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
                committed = sum(max(meta.offset, 0) for meta in offsets.values())
            except KafkaError as exc:  # e.g. no group coordinator yet on a new cluster
                if not exc.retriable:
                    raise
                committed = 0
            samples.append((time.perf_counter() - started, total - committed))
            if committed >= total or timeout_s == 0:
                return samples, total
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"the monitor did not catch up within {timeout_s:.0f} s")
            await asyncio.sleep(every_s)
    finally:
        await admin.close()
        await consumer.stop()


def _lag_ms(path: Path, tenant: str) -> dict[str, float]:
    """Produce-to-stored lag of the lag phase's rows, read from the stopped monitor's chdb folder."""
    db = ChdbClickHouse(path)
    try:
        [(n, p50, p90, p99, worst)] = db.query(
            "SELECT n, q[1], q[2], q[3], worst FROM (SELECT count() AS n, "
            "quantilesExact(0.5, 0.9, 0.99)(lag) AS q, max(lag) AS worst FROM ("
            "SELECT toUnixTimestamp64Milli(inserted_at) - toUnixTimestamp64Milli(occurred_at) AS lag "
            "FROM requests FINAL WHERE tenant_id = {t:String}))",
            {"t": tenant},
        )
    finally:
        db.close()
    return {
        "rows": int(n),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(worst),
    }


def _sink_run(stack: Stack, state_dir: Path, run: int, events: int) -> dict[str, Any]:
    """Start a fresh monitor (new group, new chdb folder) over the filled topic: events/s, rows and the
    backlog's consumer lag over time; then the lag phase (steady traffic) and its produce-to-stored lag."""
    group = f"bench-monitor-{run}-{uuid.uuid4().hex[:6]}"
    grpc_port = PORT_BASE + 55 + run
    chdb_path = state_dir / f"chdb-{run}"
    proc = service_process(
        stack,
        "monitor",
        grpc_port=grpc_port,
        env={
            "LLMOPS_MONITOR_CONSUMER_GROUP": group,
            "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(chdb_path),
            "LLMOPS_MONITOR_LOG_LEVEL": "WARNING",
        },
        start_timeout_s=300,
    )
    bootstrap = stack.kafka.bootstrap_servers
    proc.start(wait=False)  # the consumers start before gRPC reports SERVING: measure from the launch
    try:
        samples, total = asyncio.run(_wait_committed(bootstrap, group, 900))
        [(first_s, first_left)] = [(t, left) for t, left in samples if left < total][:1]
        last_s = samples[-1][0]
        events_per_s = first_left / (last_s - first_s) if last_s > first_s else float("inf")
        proc.wait_healthy()
        rows = asyncio.run(_count_rows(f"127.0.0.1:{grpc_port}"))
        if rows != events:
            raise RuntimeError(f"monitor stored {rows} requests for {events} events")
        status(
            f"monitor: run {run + 1}: backlog of {total:,} drained; "
            f"lag phase {LAG_RATE}/s for {LAG_SECONDS:.0f} s"
        )
        lag_tenant = f"{LAG_TENANT}-{run}"
        sent = asyncio.run(_produce_paced(bootstrap, lag_tenant, LAG_RATE, LAG_SECONDS))
        asyncio.run(_wait_committed(bootstrap, group, 120))
        lag_rows = asyncio.run(_count_rows(f"127.0.0.1:{grpc_port}", lag_tenant))
        if lag_rows != sent:
            raise RuntimeError(f"monitor stored {lag_rows} lag-phase requests for {sent} events")
    finally:
        proc.stop()
    lag = _lag_ms(chdb_path, lag_tenant)
    # Consumer lag over time in the backlog run, about one sample a second: (seconds since the launch,
    # records not yet committed).
    timeline = [(round(t, 1), left) for t, left in samples[::20]] + [(round(last_s, 1), 0)]
    return {
        "events_per_s": events_per_s,
        "rows": rows,
        "first_commit_s": round(first_s, 1),
        "drained_s": round(last_s, 1),
        "backlog_lag_timeline": timeline,
        "lag_phase": {"rate_per_s": LAG_RATE, "seconds": LAG_SECONDS, "events": sent, **lag},
    }


StoreBatch = Callable[[list[bytes], bool], None]


@contextmanager
def _in_process_store(path: Path) -> Iterator[tuple[MonitorStore, StoreBatch]]:
    """A fresh chdb store in this process, under the monitor process's garbage-collector settings (this
    process's own objects frozen), and `store_batch(payloads, fast)`: one batch of QueryAnswered bodies
    stored by the fast path (native.frame + native.store_answered) or by the per-event path (decode,
    domain.scored_answered_row, MonitorStore.insert_requests)."""
    settings = MonitorSettings()
    policy = RedactionPolicy()
    statements = native.AnsweredStatements.build(policy, settings.sentence_support_threshold, REQUEST_COLUMNS)
    store = MonitorStore(ChdbClickHouse(path))

    def store_batch(payloads: list[bytes], fast: bool) -> None:
        if fast:
            native.store_answered(store.db, statements, native.frame(payloads))
            return
        now = datetime.now(UTC)
        rows = []
        for body in payloads:
            event = QueryAnswered()
            event.ParseFromString(body)
            rows.append(
                domain.scored_answered_row(
                    event,
                    redaction=policy,
                    received_at=now,
                    support_threshold=settings.sentence_support_threshold,
                )
            )
        store.insert_requests(rows)

    thresholds = gc.get_threshold()
    try:
        store.create_schema()
        tune_gc()
        yield store, store_batch
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        store.close()


def _raw_sink(payloads: list[bytes], path: Path, *, fast: bool) -> float:
    """events/s of the fast path or of the per-event path (_in_process_store) in batches of BATCH."""
    with _in_process_store(path) as (store, store_batch):
        started = time.perf_counter()
        for offset in range(0, len(payloads), BATCH):
            store_batch(payloads[offset : offset + BATCH], fast)
        elapsed = time.perf_counter() - started
        if store.count_rows("requests") != len(payloads):
            raise RuntimeError("raw sink lost rows")
        return len(payloads) / elapsed


def _unjudged(event: QueryAnswered) -> bytes:
    """`event` as a producer that does not judge its answers sends it: without sentence support."""
    copy = QueryAnswered()
    copy.CopyFrom(event)
    copy.ClearField("sentence_support")
    return copy.SerializeToString()


CROSSOVER_SIZES = (500, 1000, 2000, 4000)
CROSSOVER_SECONDS = 2.0


def _paths_by_batch_size(payloads: list[bytes], path: Path) -> dict[int, dict[str, list[float]]]:
    """events/s of the fast path and of the per-event path at each batch size of CROSSOVER_SIZES, each
    for about CROSSOVER_SECONDS, twice, alternating (in this process, one chdb): where the fast path's
    fixed cost per batch starts to pay (MonitorSettings.fast_path_min_records)."""
    result: dict[int, dict[str, list[float]]] = {}
    with _in_process_store(path) as (store, store_batch):
        for size in CROSSOVER_SIZES:
            rates: dict[str, list[float]] = {"fast": [], "per-event": []}
            for fast in (True, False, True, False):
                stored, offset, started = 0, 0, time.perf_counter()
                while time.perf_counter() - started < CROSSOVER_SECONDS and offset + size <= len(payloads):
                    store_batch(payloads[offset : offset + size], fast)
                    offset += size
                    stored += size
                rates["fast" if fast else "per-event"].append(stored / (time.perf_counter() - started))
                store.db.command("TRUNCATE TABLE requests")  # every run starts from an empty table
            result[size] = rates
    return result


def run_monitor(events: int = 100_000, repeats: int = 2) -> tuple[list[Row], dict[str, Any]]:
    batch = make_events(events)
    payloads = [e.SerializeToString() for e in batch]
    unjudged = [_unjudged(e) for e in batch]
    payload_bytes = statistics.mean(map(len, payloads[:200]))
    runs: list[dict[str, Any]] = []
    raw_rates: list[float] = []
    per_event_rates: list[float] = []
    unjudged_rates: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llmops-bench-monitor-") as state_dir:
        state = Path(state_dir)
        stack = Stack(state / "stack", port_base=PORT_BASE, components=("kafka",))
        try:
            status(f"monitor: starting Kafka, producing {events:,} QueryAnswered events")
            stack.up()
            asyncio.run(produce_events(stack.kafka.bootstrap_servers, batch))
            # Alternate: A (monitor process over the filled topic), B (fast path in this process), the
            # per-event path in this process, A, B, ...
            for rep in range(repeats):
                run = _sink_run(stack, state, rep, events)
                runs.append(run)
                lag = run["lag_phase"]
                status(
                    f"monitor: run {rep + 1}/{repeats} monitor process: {run['events_per_s']:,.0f} ev/s "
                    f"({run['rows']} rows); lag at {LAG_RATE}/s p50 {lag['p50_ms']:.0f} ms, "
                    f"p99 {lag['p99_ms']:.0f} ms"
                )
                raw = _raw_sink(payloads, state / f"raw-{rep}", fast=True)
                raw_rates.append(raw)
                per_event = _raw_sink(payloads, state / f"per-event-{rep}", fast=False)
                per_event_rates.append(per_event)
                unjudged_rate = _raw_sink(unjudged, state / f"unjudged-{rep}", fast=True)
                unjudged_rates.append(unjudged_rate)
                status(
                    f"monitor: run {rep + 1}/{repeats} in-process fast path {raw:,.0f} ev/s, "
                    f"per-event path {per_event:,.0f} ev/s, fast path without sentence support "
                    f"{unjudged_rate:,.0f} ev/s"
                )
        finally:
            stack.down()
        status("monitor: fast path vs per-event path by batch size")
        by_size = _paths_by_batch_size(payloads[:40_000], state / "by-size")
    monitor_rates = [r["events_per_s"] for r in runs]
    a, b = statistics.median(monitor_rates), statistics.median(raw_rates)
    c = statistics.median(per_event_rates)
    d = statistics.median(unjudged_rates)
    notes = (
        f"QueryAnswered ~{payload_bytes:,.0f} B (5 chunks of ~60 words, 5 timings), produced as the "
        f"generator's records ({COMPRESSION} batches of up to 16 KiB, FastStream's "
        f"headers), N={events:,} per run, "
        f"median of {repeats} (A runs {', '.join(f'{r:,.0f}' for r in monitor_rates)}; B runs "
        f"{', '.join(f'{r:,.0f}' for r in raw_rates)}); A = one monitor process, chdb, batches of up to "
        f"{BATCH}, {MonitorSettings().consumers} consumers, events/s between first and last commit, every "
        "request stored once (checked over gRPC); "
        "B = the same batches through the fast path (services/monitor/native.py) in one process; "
        f"{os.cpu_count()} CPUs shared with Kafka"
    )
    path_notes = (
        f"the same {events:,} events in batches of {BATCH}, both in this process, alternating; fast path: "
        "framed records, the row and groundedness computed by the ClickHouse engine (runs "
        f"{', '.join(f'{r:,.0f}' for r in raw_rates)}); per-event path: decode, groundedness, rows and "
        f"insert_requests in Python (runs {', '.join(f'{r:,.0f}' for r in per_event_rates)}); both store "
        "equal rows (tests/unit/test_monitor_native.py)"
    )
    judged_notes = (
        f"the same {events:,} answers through the fast path in this process, in batches of {BATCH}: as the "
        "generator publishes them, with each sentence's support in the context (QueryAnswered."
        "sentence_support; runs " + ", ".join(f"{r:,.0f}" for r in raw_rates) + "), and without it, as a "
        "producer that does not judge its answers sends them, so the engine tokenises answer and chunks "
        "(runs " + ", ".join(f"{r:,.0f}" for r in unjudged_rates) + "); both give the same scores "
        "(tests/unit/test_monitor_native.py)"
    )
    p50s = [r["lag_phase"]["p50_ms"] for r in runs]
    p99s = [r["lag_phase"]["p99_ms"] for r in runs]
    maxes = [r["lag_phase"]["max_ms"] for r in runs]
    lag_notes = (
        f"{LAG_RATE} QueryAnswered/s for {LAG_SECONDS:.0f} s into the running monitor (after its backlog), "
        "per event: meta.occurred_at at produce -> the row's inserted_at in chdb; runs p50 "
        f"{', '.join(f'{v:.0f}' for v in p50s)} ms, p99 {', '.join(f'{v:.0f}' for v in p99s)} ms, max "
        f"{', '.join(f'{m:.0f}' for m in maxes)} ms. Backlog of {events:,}: first "
        f"commit {', '.join(str(r['first_commit_s']) for r in runs)} s after launch (start-up, group join), "
        f"drained at {', '.join(str(r['drained_s']) for r in runs)} s (consumer lag over time in latest.json)"
    )
    threshold = MonitorSettings().fast_path_min_records
    at = {size: {k: statistics.median(v) for k, v in rates.items()} for size, rates in by_size.items()}
    size_notes = (
        "events/s in this process, fast path / per-event path by batch size: "
        + "; ".join(f"{size:,}: {r['fast']:,.0f} / {r['per-event']:,.0f}" for size, r in at.items())
        + f" (medians of 2 alternating runs of ~{CROSSOVER_SECONDS:.0f} s each); the fast path has a fixed "
        "cost per batch, so the monitor takes it from fast_path_min_records on"
    )
    rows = [
        Row(
            f"monitor store paths at the threshold, batches of {threshold:,}",
            f"fast path {rate(at[threshold]['fast'])}" if threshold in at else "",
            f"per-event path {rate(at[threshold]['per-event'])}" if threshold in at else "",
            f"{at[threshold]['fast'] / at[threshold]['per-event']:.2f}" if threshold in at else "",
            size_notes,
        ),
        Row(
            "monitor sink (QueryAnswered -> chdb)",
            f"monitor {rate(a)}",
            f"in-process fast path {rate(b)}",
            f"{a / b:.2f}",
            notes,
        ),
        Row(
            "monitor store paths, in-process (QueryAnswered -> chdb)",
            f"fast path {rate(b)}",
            f"per-event path {rate(c)}",
            f"{b / c:.2f}",
            path_notes,
        ),
        Row(
            "monitor fast path, answers judged by the generator vs by the monitor",
            f"with sentence support {rate(b)}",
            f"without {rate(d)}",
            f"{b / d:.2f}",
            judged_notes,
        ),
        Row(
            "monitor telemetry lag, produce -> row stored (ms)",
            f"p50 {statistics.median(p50s):.0f}",
            f"p99 {statistics.median(p99s):.0f}",
            "",
            lag_notes,
        ),
    ]
    return rows, {
        "events": events,
        "payload_bytes": payload_bytes,
        "monitor_ev_per_s": monitor_rates,
        "raw_ev_per_s": raw_rates,
        "per_event_ev_per_s": per_event_rates,
        "unjudged_fast_ev_per_s": unjudged_rates,
        "paths_by_batch_size": by_size,
        "runs": runs,
    }


if __name__ == "__main__":
    from bench.report import markdown_table

    rows, raw_numbers = run_monitor(events=int(os.environ.get("BENCH_MONITOR_EVENTS", "100000")))
    print(markdown_table(rows))
    print(raw_numbers)
