"""Load and fault-injection helpers for the fault tests (tests/e2e/test_faults_*.py).

- `produce_acknowledged`: many events with acks=all, recording which sends the cluster acknowledged;
- `Tail`: a consumer that follows topics from the start and counts records by key (correlation id);
- `QueryLoad`: concurrent gRPC callers (unary and streaming) recording how every call ended;
- `monitor_requests`: what the monitor recorded for a tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from google.protobuf.message import DecodeError, Message
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.monitor.v1 import monitor_service_pb2 as monitor_pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as monitor_grpc
from llmops.query.v1.events_pb2 import QueryRequested

from shared.events import event_headers
from shared.grpc_errors import error_info
from shared.topics import QUERY_REQUESTED

# The fixtures' port base (tests/conftest.py); extra clusters of the fault tests sit above it.
TEST_PORT_BASE = int(os.environ.get("LLMOPS_TEST_PORT_BASE", "29000"))
KAFKA3_PORT_BASE = TEST_PORT_BASE + 800  # brokers +892, +992, +1092 (controllers +1)
FAULT_STACK_PORT_BASE = TEST_PORT_BASE + 1000  # own Triton +0..2, Weaviate +51, +60..63, +80


# --- Kafka ------------------------------------------------------------------------------------------


@dataclass
class Sends:
    """What a producer sent: the keys the cluster acknowledged (acks=all) and those it refused."""

    attempted: int = 0
    acknowledged: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def settled(self) -> int:
        return len(self.acknowledged) + len(self.refused)


async def produce_acknowledged(
    bootstrap: str, topic: str, events: Sequence[Message], sends: Sends, *, window: int = 2000
) -> None:
    """Send `events` (key = correlation id) with acks=all and an idempotent producer, at most `window`
    unacknowledged at a time; `sends` fills in as the acknowledgements (or errors) come back."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    pending: set[asyncio.Future[Any]] = set()
    try:
        for event in events:
            key: str = event.meta.correlation_id  # type: ignore[attr-defined]
            headers = [(k, v.encode()) for k, v in event_headers(event).items()]
            while len(pending) >= window:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            sends.attempted += 1
            try:
                future = await producer.send(
                    topic, event.SerializeToString(), key=key.encode(), headers=headers
                )
            except Exception as exc:  # refused before it was queued
                sends.refused[key] = repr(exc)
                continue
            future.add_done_callback(lambda f, key=key: _settle(sends, key, f))
            pending.add(future)
        if pending:
            await asyncio.wait(pending)
    finally:
        await producer.stop()


def _settle(sends: Sends, key: str, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        sends.refused[key] = "cancelled"
    elif (exc := future.exception()) is not None:
        sends.refused[key] = repr(exc)
    else:
        sends.acknowledged.add(key)


class Tail:
    """Follows `topics` from their start and counts records per topic and key, with arrival times."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.counts: dict[str, Counter[str]] = {t: Counter() for t in topics}
        self.arrivals: list[float] = []  # monotonic time of every record read
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tail:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
        )
        await self._consumer.start()
        partitions = []
        for topic in self.topics:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                await self._consumer._client.force_metadata_update()
                parts = self._consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, p) for p in sorted(parts)]
        assert partitions, f"no partitions for {self.topics}"
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=300)
            now = time.monotonic()
            for tp, records in batch.items():
                for record in records:
                    self.counts[tp.topic][(record.key or b"").decode()] += 1
                    self.arrivals.append(now)

    def keys(self, *topics: str) -> Counter[str]:
        """Records per key over `topics` (all followed topics when none are named)."""
        total: Counter[str] = Counter()
        for topic in topics or self.topics:
            total.update(self.counts[topic])
        return total

    async def wait_covering(self, wanted: set[str], timeout_s: float, *topics: str) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not wanted - self.keys(*topics).keys():
                return True
            await asyncio.sleep(0.5)
        return not wanted - self.keys(*topics).keys()

    async def drain(self, timeout_s: float = 60.0) -> None:
        """Return once every record written up to now has been read."""
        assert self._consumer is not None
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = [await self._position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"tail of {self.topics} did not reach the end offsets in {timeout_s}s")

    async def _position(self, tp: TopicPartition) -> int:
        assert self._consumer is not None
        return int(await self._consumer.position(tp))


async def partition_leaders(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> leader node id (-1 while none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        return {(d["topic"], p["partition"]): p["leader"] for d in described for p in d["partitions"]}
    finally:
        await admin.close()


async def wait_leaders_moved(bootstrap: str, topics: Sequence[str], dead: int, timeout_s: float) -> float:
    """Seconds until no partition of `topics` is led by node `dead` (or leaderless)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(Exception):  # metadata requests may fail while the cluster reacts
            leaders = await partition_leaders(bootstrap, topics)
            if leaders and all(leader not in (dead, -1) for leader in leaders.values()):
                return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"partitions still led by node {dead} after {timeout_s}s")


async def requested_ids(bootstrap: str, tenant: str) -> set[str]:
    """Correlation ids of every QueryRequested of `tenant` on the request topic (read to its end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    ids: set[str] = set()
    try:
        parts = [TopicPartition(QUERY_REQUESTED.name, p) for p in range(QUERY_REQUESTED.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        remaining = set(parts)
        while remaining:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    event = QueryRequested()
                    with contextlib.suppress(DecodeError):  # other tests' poison input
                        event.ParseFromString(record.value)
                        if event.meta.tenant_id == tenant:
                            ids.add(event.meta.correlation_id)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return ids


# --- gRPC load --------------------------------------------------------------------------------------

# Status codes a query may end with under faults, each with a reason (ErrorInfo from the gateway).
FAULT_CODES = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}


@dataclass
class CallOutcome:
    stream: bool
    started: float  # monotonic
    ended: float
    deadline_s: float
    code: str = "OK"
    reason: str = ""  # ErrorInfo reason; empty when the call failed without one (transport error)
    detail: str = ""
    correlation_id: str = ""
    answer: str = ""
    finals: int = 0  # final answers received (a stream must get exactly one)
    streamed: str = ""  # pieces joined, for streams

    @property
    def ok(self) -> bool:
        return self.code == "OK"


@dataclass
class QueryLoad:
    """`concurrency` callers asking questions in a loop (every `stream_every`-th call streams) until
    `stop()`; each call's outcome is kept. `target()` is read before every call, so callers follow a
    gateway that restarted on a new port."""

    target: Callable[[], str]
    api_key: str
    questions: Sequence[str]
    concurrency: int = 4
    deadline_s: float = 20.0
    stream_every: int = 2
    pause_s: float = 0.05
    outcomes: list[CallOutcome] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _calls: int = 0

    def start(self) -> QueryLoad:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.concurrency)]
        return self

    async def stop(self) -> list[CallOutcome]:
        """Stop asking and wait until every call in flight has ended."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        return self.outcomes

    def _channel(self) -> grpc.aio.Channel:
        target = self.target()
        if target not in self._channels:
            self._channels[target] = grpc.aio.insecure_channel(target)
        return self._channels[target]

    async def _worker(self, index: int) -> None:
        while not self._stopping.is_set():
            self._calls += 1
            question = self.questions[self._calls % len(self.questions)]
            stream = self.stream_every > 0 and self._calls % self.stream_every == 0
            outcome = await self.ask(question, stream=stream)
            self.outcomes.append(outcome)
            await asyncio.sleep(self.pause_s if outcome.ok else max(self.pause_s, 0.5))

    async def ask(self, question: str, *, stream: bool) -> CallOutcome:
        stub = query_grpc.QueryServiceStub(self._channel())
        metadata = (("x-api-key", self.api_key),)
        outcome = CallOutcome(stream=stream, started=time.monotonic(), ended=0.0, deadline_s=self.deadline_s)
        call: Any = None
        try:
            if stream:
                call = stub.QueryStream(
                    query_pb.QueryStreamRequest(question=question), metadata=metadata, timeout=self.deadline_s
                )
                pieces: list[str] = []
                async for message in call:
                    if message.WhichOneof("payload") == "token":
                        pieces.append(message.token.strip())
                    else:
                        outcome.finals += 1
                        outcome.answer = message.final.answer
                        outcome.correlation_id = message.final.correlation_id
                outcome.streamed = " ".join(pieces)
            else:
                call = stub.Query(
                    query_pb.QueryRequest(question=question), metadata=metadata, timeout=self.deadline_s
                )
                response = await call
                outcome.finals = 1
                outcome.answer = response.answer
                outcome.correlation_id = response.correlation_id
        except grpc.aio.AioRpcError as exc:
            outcome.code = exc.code().name
            outcome.detail = exc.details() or ""
            info = error_info(exc)
            if info is not None:
                outcome.reason = info.reason
                outcome.correlation_id = info.metadata.get("correlation_id", "")
            if not outcome.correlation_id and call is not None:
                outcome.correlation_id = await _correlation_id(call)
        outcome.ended = time.monotonic()
        return outcome


async def _correlation_id(call: Any) -> str:
    """The x-correlation-id the gateway sent before publishing, if the call got that far."""
    try:
        metadata = await asyncio.wait_for(call.initial_metadata(), 1.0)
    except Exception:  # the connection died first
        return ""
    for key, value in metadata or ():
        if key == "x-correlation-id":
            return str(value)
    return ""


def summarize(outcomes: Sequence[CallOutcome]) -> dict[str, int]:
    """Calls per 'CODE' or 'CODE/REASON'."""
    return dict(Counter(o.code if o.ok else f"{o.code}/{o.reason or '-'}" for o in outcomes))


# --- Monitor ----------------------------------------------------------------------------------------


async def monitor_requests(target: str, tenant: str) -> list[monitor_pb.RequestRecord]:
    """Every request the monitor recorded for `tenant` in the last hour (at most 1000)."""
    window = monitor_pb.TimeWindow()
    window.start.FromSeconds(int(time.time()) - 3600)
    window.end.FromSeconds(int(time.time()) + 600)
    async with grpc.aio.insecure_channel(target) as channel:
        stub: Any = monitor_grpc.MonitorServiceStub(channel)
        response = await stub.ListRequests(
            monitor_pb.ListRequestsRequest(tenant_id=tenant, window=window, limit=1000), timeout=15
        )
    return list(response.requests)
