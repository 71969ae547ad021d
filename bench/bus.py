"""Bus benchmark: events/s through the platform's FastStream bus vs a hand-written aiokafka loop.

Both variants do the same consume-and-produce hop on the same broker and the same records: take
QueryRequested records from an input topic, parse them, publish them to an output topic and wait for
the broker's acknowledgement (acks=all, idempotent producer), then commit the input offsets as the
commit mode says.

- Variant A, FastStream: the broker exactly as services build it (`shared.bus.create_broker`:
  apply_types=False, FastStream's access logs at DEBUG, telemetry and Prometheus middlewares, the
  EventGuard with an in-memory idempotency store) and a subscriber the way the platform's services
  subscribe in that mode; its handler only `publish_event`s the events onward.
- Variant B, raw aiokafka: AIOKafkaConsumer.getmany + ParseFromString + AIOKafkaProducer.send_and_wait.

Commit modes, each the same in both variants:

- batch commit (the platform's bulk path: embedder and retriever consume this way): a FastStream batch
  subscriber (`batch=True, max_records=32, batch_timeout_ms=BATCH_POLL_TIMEOUT_MS,
  ack_policy=AckPolicy.NACK_ON_ERROR, decoder=raw_records`) whose handler runs
  `EventGuard.process_batch(records, QueryRequested, handle)`, `handle` publishing every decoded event
  onward concurrently (asyncio.gather) and rejecting none; FastStream then commits once per batch
  (KafkaAckableMessage.ack -> consumer.commit()). The raw loop: getmany(max_records=32), ParseFromString
  each record, gather of send_and_wait for all of them, then one consumer.commit() per batch;
- per-message commit: a subscriber with `decoder=protobuf_decoder(QueryRequested)`, AckPolicy.ACK
  and a plain `async def forward(event: QueryRequested)` (KafkaAckableMessage.ack awaits
  consumer.commit() after every handled record, enable_auto_commit=False) vs the raw loop awaiting
  consumer.commit({partition: offset + 1}) after every produced record, one record at a time. Kafka
  4's group coordinator holds each offset-commit write for group.coordinator.append.linger.ms (5 ms
  by default), so this mode is bounded by the broker at roughly 150 events/s for any one consumer;
- auto commit: the same subscriber with AckPolicy.ACK_FIRST (enable_auto_commit=True, never commits
  itself) vs the raw loop with enable_auto_commit=True, one record at a time: the framework's own
  per-message cost shows here.

The clock runs from the first consumed record to the acknowledgement of the Nth produced one, so
consumer-group joins and connection set-up are not measured; the process's CPU time over the same
span is recorded too (all threads), which is steadier than events/s on a shared machine. Every timed
run reads the whole pre-produced input topic of its mode with a consumer group of its own and writes
to an output topic of its own; afterwards its output size and committed offsets are checked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy
from llmops.query.v1.events_pb2 import QueryRequested
from prometheus_client import CollectorRegistry

from bench.report import Row, rate, status
from shared.bus import (
    BATCH_POLL_TIMEOUT_MS,
    Decoded,
    EventGuard,
    Rejected,
    create_broker,
    parse_event,
    protobuf_decoder,
    publish_event,
    raw_records,
)
from shared.events import HEADER_EVENT_TYPE, event_headers, new_meta
from shared.idempotency import MemoryIdempotencyStore
from shared.settings import KafkaSettings

PARTITIONS = 3  # the broker's num.partitions, what the platform's topics use locally
MAX_RECORDS = 32  # the embedder's and retriever's max_batch_records default
QUESTION_CHARS = 200
SERVICE = "bench"
_SENTENCE = (
    "how does the retrieval pipeline rank context passages for a tenant when the embedding model "
    "changes between index builds and which latency budget applies to streaming generation "
    "of answers with citations from internal documents about billing quotas and incidents"
)
_WORDS = _SENTENCE.split(" ")


@dataclass(frozen=True)
class CommitMode:
    """How input offsets are committed; `ack_policy` for FastStream, `auto_commit` for the raw loop.

    `batch`: a FastStream batch subscriber (EventGuard.process_batch) vs a raw getmany loop that
    produces each batch concurrently and commits once per batch.
    """

    name: str
    ack_policy: AckPolicy
    auto_commit: bool
    description: str
    batch: bool = False


BATCH = CommitMode(
    "batch commit",
    AckPolicy.NACK_ON_ERROR,
    auto_commit=False,
    batch=True,
    description="the platform's bulk path (embedder, retriever): batch subscriber, "
    f"max_records={MAX_RECORDS}, AckPolicy.NACK_ON_ERROR, decoder=raw_records, "
    "EventGuard.process_batch, handler gathers publish_event vs "
    f"getmany(max_records={MAX_RECORDS}) + gather of send_and_wait + one commit() per batch",
)
PER_MESSAGE = CommitMode(
    "per-message commit",
    AckPolicy.ACK,
    auto_commit=False,
    description="AckPolicy.ACK, `async def forward(event: QueryRequested)` vs commit() after each "
    "record; both bounded by the broker's 5 ms group.coordinator.append.linger.ms per commit",
)
AUTO = CommitMode(
    "auto commit",
    AckPolicy.ACK_FIRST,
    auto_commit=True,
    description="AckPolicy.ACK_FIRST, `async def forward(event: QueryRequested)` vs "
    "enable_auto_commit=True, one record at a time",
)
MODES = (BATCH, PER_MESSAGE, AUTO)  # the order of the table's rows


@dataclass(frozen=True)
class RunSpec:
    """What one run reads and writes: a consumer group of its own and an output topic of its own."""

    bootstrap: str
    input_topic: str
    output_topic: str
    group: str
    events: int
    mode: CommitMode


@dataclass
class RunResult:
    """One timed pass of one variant over the input topic."""

    variant: str
    mode: str
    events: int
    seconds: float
    cpu_seconds: float
    output_records: int = -1
    committed: int = -1

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_us_per_event": round(self.cpu_us_per_event, 1),
        }


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of a run and the CPU seconds this process (all its threads) spent in it."""

    seconds: float
    cpu_seconds: float


@dataclass
class _Meter:
    """Counts produced records; the clock starts at the first consumed one and stops at the Nth."""

    target: int
    count: int = 0
    first: float | None = None
    last: float | None = None
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def consumed(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu_first = time.process_time()

    def produced(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.last = time.perf_counter()
            self.cpu_last = time.process_time()
            self.done.set()

    def timing(self) -> Timing:
        assert self.first is not None and self.last is not None
        return Timing(self.last - self.first, self.cpu_last - self.cpu_first)


def make_events(n: int, seed: int = 7) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """N serialized QueryRequested records (key, value, headers), each with a ~200-character question."""
    rng = random.Random(seed)
    tenants = [f"tenant-{i}" for i in range(8)]
    records = []
    for _ in range(n):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < QUESTION_CHARS:
            words.append(rng.choice(_WORDS))
        question = " ".join(words)[:QUESTION_CHARS].rstrip() + "?"
        event = QueryRequested(
            meta=new_meta(tenant_id=rng.choice(tenants), producer=SERVICE),
            question=question,
            max_tokens=512,
            stream=True,
        )
        headers = [(k, v.encode()) for k, v in event_headers(event).items()]
        records.append((event.meta.correlation_id.encode(), event.SerializeToString(), headers))
    return records


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def produce_input(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """Fill the input topic once, pipelined (this is set-up, not measured)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=headers) for key, value, headers in records
        ]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def start_at_end(consumer: AIOKafkaConsumer, timeout_s: float = 60.0) -> None:
    """Wait for the started consumer's partitions and move it to their ends, so it reads only what is
    produced from now on."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the consumer got no partitions in {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    await consumer.seek_to_end()


async def topic_size(bootstrap: str, topic: str) -> int:
    """Records in `topic` (sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    """Sum of `group`'s committed offsets on `topic`: N when every record was committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def _timeout_s(n: int) -> float:
    return 60.0 + n / 100  # generous: even 100 ev/s finishes; a hang fails the run, not the whole bench


@dataclass(frozen=True)
class FastStreamSetup:
    """How variant A's broker is built: the platform's (create_broker) or a bare KafkaBroker."""

    key: str
    label: str
    platform_broker: bool  # create_broker (telemetry, Prometheus, EventGuard) or a bare KafkaBroker


PLATFORM = FastStreamSetup("faststream", "FastStream", platform_broker=True)
# --breakdown: the same hop on a KafkaBroker with create_broker's producer settings and
# apply_types=False but no middlewares (and, in batch mode, no EventGuard.process_batch: the
# handler parses the records itself), to show what the platform's middlewares and guard cost.
BREAKDOWN = (FastStreamSetup("faststream-bare", "bare KafkaBroker (no middlewares)", platform_broker=False),)
BREAKDOWN_NOTE = (
    "breakdown: variant A as above on a KafkaBroker with create_broker's producer settings and "
    "apply_types=False but no telemetry/Prometheus middlewares and no EventGuard (batch: the handler "
    "parse_events the records and gathers publish_event itself)"
)
BREAKDOWN_MODES = (BATCH, AUTO)  # the modes where the framework's own cost shows


def _broker(spec: RunSpec, setup: FastStreamSetup) -> tuple[KafkaBroker, EventGuard | None]:
    if setup.platform_broker:
        guard = EventGuard(
            service=SERVICE,
            group_id=spec.group,
            dead_letter_topic=KafkaSettings().dead_letter_topic,
            store=MemoryIdempotencyStore(),
        )
        # A registry per run: the Prometheus middleware registers its collectors once per registry.
        broker = create_broker(
            KafkaSettings(bootstrap_servers=spec.bootstrap),
            guard=guard,
            service=SERVICE,
            registry=CollectorRegistry(),
        )
        return broker, guard
    # The producer and handler settings create_broker uses, nothing else.
    broker = KafkaBroker(
        spec.bootstrap.split(","),
        client_id=f"llmops-{SERVICE}",
        acks=-1,
        enable_idempotence=True,
        graceful_timeout=15.0,
        logger=logging.getLogger("llmops.bus"),
        log_level=logging.DEBUG,
        apply_types=False,
    )
    return broker, None


async def run_faststream(spec: RunSpec, setup: FastStreamSetup = PLATFORM) -> Timing:
    """Variant A: a FastStream subscriber, as the platform's services subscribe in this mode, whose
    handler publishes the events onward."""
    broker, guard = _broker(spec, setup)
    meter = _Meter(spec.events)

    async def forward(event: QueryRequested) -> None:
        await publish_event(broker, spec.output_topic, event, key=event.meta.correlation_id)
        meter.produced()

    if spec.mode.batch:

        async def handle(decoded: Decoded[QueryRequested]) -> Rejected:
            await asyncio.gather(*(forward(event) for _, event in decoded))
            return []

        batch_subscriber = broker.subscriber(
            spec.input_topic,
            group_id=spec.group,
            batch=True,
            max_records=MAX_RECORDS,
            batch_timeout_ms=BATCH_POLL_TIMEOUT_MS,
            ack_policy=spec.mode.ack_policy,
            decoder=raw_records,
            auto_offset_reset="earliest",
        )
        if guard is not None:

            @batch_subscriber
            async def on_batch(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
                meter.consumed()
                await guard.process_batch(records, QueryRequested, handle)

        else:

            @batch_subscriber
            async def on_batch_bare(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
                meter.consumed()
                events = [
                    parse_event(r.value, _header(r, HEADER_EVENT_TYPE), QueryRequested) for r in records
                ]
                await asyncio.gather(*(forward(event) for event in events))

    else:

        @broker.subscriber(
            spec.input_topic,
            group_id=spec.group,
            ack_policy=spec.mode.ack_policy,
            decoder=protobuf_decoder(QueryRequested),
            auto_offset_reset="earliest",
        )
        async def on_event(event: QueryRequested) -> None:
            meter.consumed()
            await forward(event)

    await broker.start()
    try:
        await _within(meter.done.wait(), meter, setup.label)
    finally:
        await broker.stop()
    return meter.timing()


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", "replace")
    return None


async def run_raw(spec: RunSpec) -> Timing:
    """Variant B: a plain aiokafka consume-parse-produce-commit loop; measured like variant A."""
    consumer = AIOKafkaConsumer(
        spec.input_topic,
        bootstrap_servers=spec.bootstrap,
        client_id=f"llmops-{SERVICE}-raw",
        group_id=spec.group,
        enable_auto_commit=spec.mode.auto_commit,
        auto_offset_reset="earliest",
    )
    # The producer settings create_broker gives FastStream's producer: acks=all, idempotence on.
    producer = AIOKafkaProducer(
        bootstrap_servers=spec.bootstrap,
        client_id=f"llmops-{SERVICE}-raw",
        acks="all",
        enable_idempotence=True,
    )
    meter = _Meter(spec.events)
    per_message = not spec.mode.auto_commit

    async def send(event: QueryRequested) -> None:
        await producer.send_and_wait(
            spec.output_topic,
            event.SerializeToString(),
            key=event.meta.correlation_id.encode(),
            headers=[(k, v.encode()) for k, v in event_headers(event).items()],
        )
        meter.produced()

    async def batch_loop() -> None:
        while not meter.done.is_set():
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            records = list(chain(*batches.values()))
            if not records:
                continue
            meter.consumed()
            events = []
            for record in records:
                event = QueryRequested()
                event.ParseFromString(record.value)
                events.append(event)
            await asyncio.gather(*(send(event) for event in events))
            await consumer.commit()

    async def record_loop() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    meter.consumed()
                    event = QueryRequested()
                    event.ParseFromString(record.value)
                    await send(event)
                    if per_message:
                        await consumer.commit({tp: record.offset + 1})
                    if meter.done.is_set():
                        return

    await producer.start()
    await consumer.start()
    try:
        await _within(batch_loop() if spec.mode.batch else record_loop(), meter, "raw aiokafka")
    finally:
        await consumer.stop()
        await producer.stop()
    return meter.timing()


async def _within(work: Awaitable[Any], meter: _Meter, variant: str) -> None:
    """Await `work` (the raw loop, or the meter's done event) or fail saying how far the run got."""
    limit = _timeout_s(meter.target)
    try:
        await asyncio.wait_for(work, limit)
    except TimeoutError as exc:
        raise TimeoutError(
            f"{variant}: only {meter.count}/{meter.target} events produced in {limit:.0f}s"
        ) from exc


RAW_KEY, RAW_LABEL = "raw", "raw aiokafka"


def _runner(key: str) -> tuple[str, Callable[[RunSpec], Awaitable[Timing]]]:
    if key == RAW_KEY:
        return RAW_LABEL, run_raw
    setup = next(s for s in (PLATFORM, *BREAKDOWN) if s.key == key)

    async def run(spec: RunSpec) -> Timing:
        return await run_faststream(spec, setup)

    return setup.label, run


def _median(runs: list[RunResult], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in runs))


@dataclass(frozen=True)
class PlannedRun:
    """One entry of the run order: a warm-up or a timed run of one variant in one commit mode."""

    kind: str  # "warmup" or "timed"
    rep: int
    key: str  # RAW_KEY or a FastStreamSetup key
    spec: RunSpec


def _input_topic(base: str, mode: CommitMode) -> str:
    return f"{base}.{mode.ack_policy.name.lower()}.input"


def _plan(
    bootstrap: str,
    base: str,
    *,
    variants: dict[str, list[str]],
    sizes: dict[str, int],
    repeats: int,
    warmup: int,
) -> list[PlannedRun]:
    """Warm-up first (auto commit, the fast mode), then per mode A, B, A, B, ...

    A timed run reads the whole input topic of its mode (sizes[mode] records), so its output size and
    committed offsets must be exactly that; a warm-up reads the first `warmup` records and stops.
    """
    order = [("warmup", AUTO, 0, key) for key in (PLATFORM.key, RAW_KEY)] if warmup else []
    order += [("timed", m, rep, key) for m in MODES for rep in range(repeats) for key in variants[m.name]]
    return [
        PlannedRun(
            kind,
            rep,
            key,
            RunSpec(
                bootstrap=bootstrap,
                input_topic=_input_topic(base, mode),
                output_topic=f"{base}.{kind}.{mode.ack_policy.name.lower()}.{rep}.{key}.out",
                group=f"{base}.{kind}.{mode.ack_policy.name.lower()}.{rep}.{key}",
                events=min(warmup, sizes[AUTO.name]) if kind == "warmup" else sizes[mode.name],
                mode=mode,
            ),
        )
        for kind, mode, rep, key in order
    ]


async def _execute(plan: list[PlannedRun], repeats: int, client_log_level: int) -> list[RunResult]:
    """Run the plan in order; check each timed run's output size and committed offsets."""
    results: list[RunResult] = []
    for run in plan:
        label, runner = _runner(run.key)
        spec = run.spec
        if run.kind == "timed":
            logging.getLogger("aiokafka").setLevel(client_log_level)
        timing = await runner(spec)
        if run.kind == "warmup":
            status(f"bus: warm-up {label}: {spec.events:,} events, {rate(spec.events / timing.seconds)}")
            continue
        result = RunResult(run.key, spec.mode.name, spec.events, timing.seconds, timing.cpu_seconds)
        result.output_records = await topic_size(spec.bootstrap, spec.output_topic)
        result.committed = await committed_total(spec.bootstrap, spec.input_topic, spec.group)
        results.append(result)
        status(
            f"bus: {spec.mode.name}, run {run.rep + 1}/{repeats}, {label}: {rate(result.events_per_s)}, "
            f"{result.cpu_us_per_event:.0f} µs CPU/event ({timing.seconds:.2f}s; "
            f"output {result.output_records:,}, committed {result.committed:,})"
        )
    return results


def _summarize(
    results: list[RunResult], variants: dict[str, list[str]], sizes: dict[str, int], repeats: int
) -> tuple[list[Row], dict[str, Any]]:
    """Table rows (each FastStream variant against the raw loop of the same mode) and raw numbers."""
    rows: list[Row] = []
    summary: dict[str, Any] = {}
    for mode in MODES:
        runs = {
            key: [r for r in results if r.mode == mode.name and r.variant == key]
            for key in variants[mode.name]
        }
        raw_rate = _median(runs[RAW_KEY], "events_per_s")
        raw_cpu = _median(runs[RAW_KEY], "cpu_us_per_event")
        mode_summary: dict[str, Any] = {
            "ack_policy": mode.ack_policy.name,
            "raw_enable_auto_commit": mode.auto_commit,
            "events_per_run": sizes[mode.name],
            "variants": {},
        }
        for key in variants[mode.name]:
            label, _ = _runner(key)
            fs_rate = _median(runs[key], "events_per_s")
            fs_cpu = _median(runs[key], "cpu_us_per_event")
            mode_summary["variants"][key] = {
                "label": label,
                "median_events_per_s": round(fs_rate, 1),
                "median_cpu_us_per_event": round(fs_cpu, 1),
                "ratio_over_raw": round(fs_rate / raw_rate, 4),
                "runs": [r.as_dict() for r in runs[key]],
            }
            if key == RAW_KEY:
                continue
            problems = [
                f"{r.variant} wrote {r.output_records:,} / committed {r.committed:,} of {r.events:,}"
                for r in (*runs[key], *runs[RAW_KEY])
                if r.output_records != r.events or r.committed != r.events
            ]
            runs_text = "; ".join(
                f"{name} runs " + ", ".join(f"{r.events_per_s:,.0f}" for r in runs[k])
                for k, name in ((key, "A"), (RAW_KEY, "B"))
            )
            what = mode.description if key == PLATFORM.key else BREAKDOWN_NOTE
            notes = (
                f"{what}; N={sizes[mode.name]:,}, median of {repeats} ({runs_text}); "
                f"CPU/event {fs_cpu:,.0f} vs {raw_cpu:,.0f} µs"
            )
            if problems:
                notes += f"; CHECK FAILED: {', '.join(problems)}"
            name = f"bus, {mode.name}" if key == PLATFORM.key else f"bus, {mode.name}, breakdown"
            rows.append(
                Row(
                    name,
                    f"{label} {rate(fs_rate)}",
                    f"{RAW_LABEL} {rate(raw_rate)}",
                    f"{fs_rate / raw_rate:.2f}",
                    notes,
                )
            )
        summary[mode.name] = mode_summary
    return rows, summary


async def run_bus(
    bootstrap: str,
    *,
    events: int,
    commit_events: int,
    batch_events: int,
    repeats: int,
    warmup: int,
    breakdown: bool = False,
) -> tuple[list[Row], dict[str, Any]]:
    """Warm up, then time each commit mode as A, B, A, B, ... and report the medians.

    `batch_events` records per batch-commit run; `events` per auto-commit run; `commit_events` per
    per-message-commit run, which is slow for every consumer because each synchronous offset commit
    waits on the broker (see the notes).
    """
    base = f"bench.bus.{uuid.uuid4().hex[:6]}"
    variants = {mode.name: [PLATFORM.key, RAW_KEY] for mode in MODES}
    if breakdown:
        for mode in BREAKDOWN_MODES:
            variants[mode.name] += [s.key for s in BREAKDOWN]
    sizes = {BATCH.name: batch_events, PER_MESSAGE.name: commit_events, AUTO.name: events}
    plan = _plan(bootstrap, base, variants=variants, sizes=sizes, repeats=repeats, warmup=warmup)

    # Until the warm-up is over, aiokafka logs expected transients: a new topic electing its
    # leaders, the offsets topic being created on the first group join.
    client_log = logging.getLogger("aiokafka")
    client_log_level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    status(
        "bus: creating topics and producing "
        + " + ".join(f"{sizes[mode.name]:,} ({mode.name})" for mode in MODES)
        + " QueryRequested events"
    )
    started = time.perf_counter()
    records = make_events(max(sizes.values()))
    inputs = {mode.name: _input_topic(base, mode) for mode in MODES}
    await create_topics(bootstrap, [*inputs.values(), *(run.spec.output_topic for run in plan)])
    for mode in MODES:  # each mode's input is the first sizes[mode] of the same records
        await produce_input(bootstrap, inputs[mode.name], records[: sizes[mode.name]])
    payload_bytes = statistics.mean(len(value) for _, value, _ in records)
    ready = [f"{await topic_size(bootstrap, topic):,}" for topic in inputs.values()]
    status(
        f"bus: input ready in {time.perf_counter() - started:.1f}s "
        f"({' + '.join(ready)} records, {payload_bytes:.0f} bytes each)"
    )
    try:
        results = await _execute(plan, repeats, client_log_level)
    finally:
        client_log.setLevel(client_log_level)
    rows, summary = _summarize(results, variants, sizes, repeats)
    raw = {
        "events": events,
        "commit_events": commit_events,
        "batch_events": batch_events,
        "max_records": MAX_RECORDS,
        "repeats": repeats,
        "warmup_events": warmup,
        "partitions": PARTITIONS,
        "payload_bytes_mean": round(payload_bytes, 1),
        "order": [f"{run.spec.mode.name}/{run.key}" for run in plan if run.kind == "timed"],
        "modes": summary,
    }
    return rows, raw
