"""Hop latency after idle gaps: a batch consumer as the platform builds it, poll timeout vs FastStream's.

The query path's stages (embedder, retriever, generator) consume in batches. FastStream's batch
subscriber polls with getmany(timeout_ms=batch_timeout_ms) and, when a poll comes back empty, sleeps
batch_timeout_ms before the next one, blind to records that arrive meanwhile. At its default (200 ms)
an idle consumer spends about half its time in that sleep. The platform sets the poll timeout to
shared.bus.BATCH_POLL_TIMEOUT_MS (a poll returns at its first record anyway), so the sleep never comes.

Both variants run side by side on one broker: two consume-and-produce hops (the platform's broker from
create_broker, a batch subscriber like ServiceRuntime.consume_routes, EventGuard.process_batch, the
handler publishing each event onward) that differ only in batch_timeout_ms. Each probe sends one
QueryRequested record to a hop's input after an idle gap drawn from IDLE_GAP_S and times it until the
record's successor is read from that hop's output (a plain aiokafka consumer, which has no such sleep);
the hops take turns, so both see the same machine load.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy
from llmops.query.v1.events_pb2 import QueryRequested
from prometheus_client import CollectorRegistry

from bench.bus import MAX_RECORDS, create_topics, make_events, start_at_end
from bench.report import Row, status
from shared.bus import (
    BATCH_POLL_TIMEOUT_MS,
    Decoded,
    EventGuard,
    Rejected,
    create_broker,
    publish_event,
    raw_records,
)
from shared.idempotency import MemoryIdempotencyStore
from shared.settings import KafkaSettings

FASTSTREAM_DEFAULT_POLL_MS = 200  # faststream.kafka's batch_timeout_ms default
IDLE_GAP_S = (0.25, 0.75)  # longer than one default poll, as between requests on a quiet system
PROBES = 40  # per variant


@dataclass(frozen=True)
class Hop:
    label: str
    poll_timeout_ms: int
    input_topic: str
    output_topic: str


def _hop_broker(bootstrap: str, hop: Hop) -> KafkaBroker:
    group = f"bench.idle.{uuid.uuid4().hex[:6]}"
    guard = EventGuard(
        service="bench",
        group_id=group,
        dead_letter_topic=KafkaSettings().dead_letter_topic,
        store=MemoryIdempotencyStore(),
    )
    broker = create_broker(
        KafkaSettings(bootstrap_servers=bootstrap), guard=guard, service="bench", registry=CollectorRegistry()
    )

    async def forward(decoded: Decoded[QueryRequested]) -> Rejected:
        for _, event in decoded:
            await publish_event(broker, hop.output_topic, event, key=event.meta.correlation_id)
        return []

    subscriber = broker.subscriber(
        hop.input_topic,
        group_id=group,
        batch=True,
        max_records=MAX_RECORDS,
        batch_timeout_ms=hop.poll_timeout_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=raw_records,
        auto_offset_reset="earliest",  # a fresh topic: the warm-up record counts even before the join
    )

    @subscriber
    async def on_batch(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
        await guard.process_batch(records, QueryRequested, forward)

    return broker


async def _read_output(consumer: AIOKafkaConsumer, arrivals: asyncio.Queue[tuple[bytes, float]]) -> None:
    """Poll the output without pause, as a service's consumer does (a record taken with getone and no
    further poll leaves its partition out of the next fetches for a while, which would time the reader,
    not the hop)."""
    while True:
        batch = await consumer.getmany(timeout_ms=1000)
        now = time.perf_counter()
        for records in batch.values():
            for record in records:
                arrivals.put_nowait((record.key, now))


async def _probe(
    producer: AIOKafkaProducer,
    arrivals: asyncio.Queue[tuple[bytes, float]],
    hop: Hop,
    record: tuple[bytes, bytes, Any],
) -> float:
    """Send one record into `hop`; ms until its successor is read from the hop's output."""
    key, value, headers = record
    started = time.perf_counter()
    await producer.send_and_wait(hop.input_topic, value, key=key, headers=headers)
    while True:
        forwarded, at = await asyncio.wait_for(arrivals.get(), timeout=10)
        if forwarded == key:
            return (at - started) * 1000


async def run_idle_hop(
    bootstrap: str, probes: int = PROBES, seed: int = 11
) -> tuple[list[Row], dict[str, Any]]:
    base = f"bench.idle.{uuid.uuid4().hex[:6]}"
    hops = [
        Hop("platform", BATCH_POLL_TIMEOUT_MS, f"{base}.platform.in", f"{base}.platform.out"),
        Hop("faststream-default", FASTSTREAM_DEFAULT_POLL_MS, f"{base}.default.in", f"{base}.default.out"),
    ]
    await create_topics(bootstrap, [t for hop in hops for t in (hop.input_topic, hop.output_topic)])
    brokers = [_hop_broker(bootstrap, hop) for hop in hops]
    outputs = [
        AIOKafkaConsumer(
            hop.output_topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
        )
        for hop in hops
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    records = make_events(2 * probes + 2)
    rng = random.Random(seed)
    latencies: dict[str, list[float]] = {hop.label: [] for hop in hops}
    status(f"bus: hop latency after idle gaps, {probes} probes per poll timeout")
    await producer.start()
    for broker in brokers:
        await broker.start()
    arrivals: list[asyncio.Queue[tuple[bytes, float]]] = [asyncio.Queue() for _ in hops]
    readers: list[asyncio.Task[None]] = []
    try:
        for output, queue in zip(outputs, arrivals, strict=True):
            await output.start()
            await start_at_end(output)  # before the first probe is sent
            readers.append(asyncio.create_task(_read_output(output, queue)))
        for i, hop in enumerate(hops):  # first record per hop: its group joins, not measured
            await _probe(producer, arrivals[i], hop, records[-1 - i])
        for n in range(probes):
            order = [0, 1] if n % 2 == 0 else [1, 0]  # alternate which hop goes first
            for i in order:
                await asyncio.sleep(rng.uniform(*IDLE_GAP_S))
                ms = await _probe(producer, arrivals[i], hops[i], records[2 * n + i])
                latencies[hops[i].label].append(ms)
    finally:
        for reader in readers:
            reader.cancel()
        for output in outputs:
            await output.stop()
        for broker in brokers:
            await broker.stop()
        await producer.stop()

    def p(label: str, q: float) -> float:
        values = sorted(latencies[label])
        return values[min(len(values) - 1, int(q * len(values)))]

    platform, default = (statistics.median(latencies[hop.label]) for hop in hops)
    row = Row(
        "batch consumer hop after an idle gap (ms)",
        f"poll timeout {BATCH_POLL_TIMEOUT_MS // 1000:,} s (platform): p50 {platform:.1f}",
        f"FastStream default {FASTSTREAM_DEFAULT_POLL_MS} ms: p50 {default:.1f}",
        f"{platform / default:.3f}",
        f"{probes} probes per variant, each after an idle gap of {IDLE_GAP_S[0]}-{IDLE_GAP_S[1]} s; one "
        "record through a batch subscriber (create_broker, EventGuard.process_batch, publish onward), "
        "send to read-back at the output; the two hops take turns on one broker; p95 "
        f"{p('platform', 0.95):.1f} vs {p('faststream-default', 0.95):.1f} ms, max "
        f"{max(latencies['platform']):.1f} vs {max(latencies['faststream-default']):.1f} ms. FastStream's "
        "batch subscriber sleeps batch_timeout_ms after an empty poll, blind to records arriving then",
    )
    raw = {
        "probes": probes,
        "idle_gap_s": list(IDLE_GAP_S),
        "latency_ms": {label: [round(v, 2) for v in values] for label, values in latencies.items()},
    }
    return [row], raw
