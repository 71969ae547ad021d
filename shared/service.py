"""ServiceRuntime: the process shell every service shares.

It owns the broker (with the EventGuard), the idempotency store, the gRPC server (health and
reflection always on), the Prometheus endpoint, JSON logs and tracing, and ties them to a FastStream
application whose signal handling gives graceful shutdown on SIGTERM:
health goes NOT_SERVING and gRPC drains, consumers stop, in-flight handlers finish (up to
graceful_timeout_s) and commit, then the process exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic

from aiokafka.structs import ConsumerRecord
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

from shared.bus import (
    BATCH_POLL_TIMEOUT_MS,
    Decoded,
    EventGuard,
    M,
    Records,
    Rejected,
    create_broker,
    headerless_batch,
    raw_records,
)
from shared.grpc_server import GrpcEndpoint, Registration, start_grpc_server
from shared.idempotency import IdempotencyStore, open_store
from shared.logs import configure_logging
from shared.observability import configure_tracing, start_metrics_endpoint
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

Lifespan = Callable[[], AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class FetchSizes:
    """aiokafka's fetch sizes (its defaults here): what one poll may bring."""

    fetch_max_bytes: int = 50 * 1024 * 1024
    max_partition_fetch_bytes: int = 1024 * 1024
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500


class LightTrafficLinger:
    """Spaces out one consumer's small batches: a batch of fewer than `below_records` that follows
    another such batch waits until `seconds` have passed since that one was handled.

    A sink pays a fixed cost per write (a ClickHouse part, a rollup, a duplicate check), so a quiet
    topic read as it trickles in costs a write per fetch; spacing the small batches cuts the writes,
    at the price of up to about `seconds` more lag for that trickle. While a batch waits, aiokafka
    holds one fetch per partition ready and leaves the rest on the broker, where the next fetch finds
    it all: `below_records` must stay under what one fetch brings at moderate traffic, or the
    consumer reads one fetch per wait and falls behind. A batch after a large one goes at once, so
    the tail of a backlog is not held."""

    def __init__(
        self,
        seconds: float,
        below_records: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.seconds, self.below_records = seconds, below_records
        self.clock, self.sleep = clock, sleep
        self.previous_small_at: float | None = None  # when the last batch, if small, was handled

    async def before(self, records: int) -> None:
        if records < self.below_records and self.previous_small_at is not None:
            wait = self.seconds - (self.clock() - self.previous_small_at)
            if wait > 0:
                await self.sleep(wait)

    def after(self, records: int) -> None:
        self.previous_small_at = self.clock() if records < self.below_records else None


@dataclass(frozen=True)
class Route(Generic[M]):
    """How one topic's records are handled: decoded as `message_type`, given to `handle` in batches,
    through `guard` (None: the runtime's EventGuard, with its idempotency store). With
    `handle_records`, batches go first to it undecoded, and to `handle` only when it declines them
    (EventGuard.process_records)."""

    message_type: type[M]
    handle: Callable[[Decoded[M]], Awaitable[Rejected]]
    guard: EventGuard | None = None
    handle_records: Callable[[Records], Awaitable[bool]] | None = None


class ServiceRuntime:
    """Builds the broker at construction (no I/O) and everything with I/O in the app's lifespan."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.store: IdempotencyStore = open_store(settings.idempotency_db, settings.idempotency_capacity)
        self.guard = EventGuard(
            service=settings.service_name,
            group_id=settings.group_id,
            dead_letter_topic=settings.kafka.dead_letter_topic,
            store=self.store,
        )
        self.broker: KafkaBroker = create_broker(
            settings.kafka,
            guard=self.guard,
            service=settings.service_name,
            graceful_timeout_s=settings.graceful_timeout_s,
        )
        self.grpc: GrpcEndpoint | None = None
        self.metrics_port: int | None = None

    def consume_batches(
        self,
        topic: str,
        message_type: type[M],
        handle: Callable[[Decoded[M]], Awaitable[Rejected]],
        *,
        max_records: int,
        title: str,
    ) -> None:
        """Subscribe the service's group to `topic` in batches: `handle` gets the decoded, not yet
        processed events of each batch and returns those that failed for good (dead-lettered); the
        batch is committed after it, or redelivered on a transient error (EventGuard.process_batch)."""
        self.consume_routes({topic: Route(message_type, handle)}, max_records=max_records, title=title)

    def consume_routes(
        self,
        routes: Mapping[str, Route[Any]],
        *,
        max_records: int,
        title: str,
        fetch: FetchSizes | None = None,
        consumers: int = 1,
        heartbeat_interval_ms: int = 3000,
        record_headers: bool = True,
        linger: Callable[[], LightTrafficLinger] | None = None,
    ) -> None:
        """`consume_batches` for several topics with one consumer (one group member: a start is one
        join, not a rebalance per topic). A batch's records go, topic by topic, through their route's
        guard and handler; a transient failure leaves the whole batch uncommitted.

        With `consumers` > 1 the process runs that many members of its group, each over its share of
        the partitions: FastStream handles one batch at a time per consumer, so one member's batch is
        fetched and checked while another's handler awaits its sink. Members join one after another, and
        each learns of the rebalance a join starts at its next heartbeat (`heartbeat_interval_ms`,
        aiokafka's default 3 s): until then the first member holds every partition.

        Without `record_headers` FastStream's batch message leaves out the records' headers (bus.py's
        headerless_batch): for bulk consumers, whose batch spans then link to no request's trace.
        `linger` makes each consumer's LightTrafficLinger (one per member: each spaces its own batches)."""
        if consumers < 1:
            raise ValueError(f"consumers must be at least 1, got {consumers}")
        fetch = fetch or FetchSizes()

        async def handle_batch(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
            by_topic: dict[str, list[ConsumerRecord[Any, Any]]] = {}
            for record in records:
                by_topic.setdefault(record.topic, []).append(record)
            for topic, topic_records in by_topic.items():
                route = routes[topic]
                guard = route.guard if route.guard is not None else self.guard
                if route.handle_records is not None:
                    await guard.process_records(
                        topic_records, route.message_type, route.handle_records, route.handle
                    )
                else:
                    await guard.process_batch(topic_records, route.message_type, route.handle)

        def member_handler() -> Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[None]]:
            if linger is None:
                return handle_batch
            spacing = linger()

            async def on_batch(records: tuple[ConsumerRecord[Any, Any], ...]) -> None:
                await spacing.before(len(records))
                await handle_batch(records)
                spacing.after(len(records))

            return on_batch

        for member in range(consumers):
            subscriber = self.broker.subscriber(
                *routes,
                group_id=self.settings.group_id,
                batch=True,
                max_records=max_records,
                batch_timeout_ms=BATCH_POLL_TIMEOUT_MS,
                ack_policy=AckPolicy.NACK_ON_ERROR,  # commit after the batch, never past unprocessed work
                decoder=raw_records,
                parser=None if record_headers else headerless_batch,
                auto_offset_reset="earliest",
                title=title if consumers == 1 else f"{title}:{member + 1}",
                fetch_max_bytes=fetch.fetch_max_bytes,
                max_partition_fetch_bytes=fetch.max_partition_fetch_bytes,
                fetch_min_bytes=fetch.fetch_min_bytes,
                fetch_max_wait_ms=fetch.fetch_max_wait_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
            )
            subscriber(member_handler())

    def app(
        self,
        *,
        grpc_registrations: Callable[[], Iterable[Registration]] = tuple,
        lifespan: Lifespan | None = None,
        before_serving: Iterable[Callable[[], Awaitable[None]]] = (),
    ) -> FastStream:
        """The FastStream application: `lifespan` creates and closes the service's own clients;
        `before_serving` runs after the broker started and before gRPC reports SERVING."""
        settings = self.settings

        @asynccontextmanager
        async def runtime_lifespan() -> AsyncIterator[None]:
            configure_logging(settings.service_name, settings.log_level)
            configure_tracing(settings.service_name)
            self.metrics_port = start_metrics_endpoint(settings.metrics_host, settings.metrics_port)
            try:
                if lifespan is None:
                    yield
                else:
                    async with lifespan():
                        yield
            finally:
                await self.store.close()

        async def start_grpc() -> None:
            for check in before_serving:
                await check()
            tls = None
            if settings.grpc_tls_cert_file and settings.grpc_tls_key_file:
                tls = (settings.grpc_tls_cert_file, settings.grpc_tls_key_file)
            self.grpc = await start_grpc_server(
                settings.grpc_host, settings.grpc_port, grpc_registrations(), tls=tls
            )
            endpoints = {
                "service": settings.service_name,
                "pid": os.getpid(),
                "grpc": f"{settings.grpc_host}:{self.grpc.port}",
                "metrics": f"http://{settings.metrics_host}:{self.metrics_port}/metrics",
            }
            log.info("service ready", extra=endpoints)
            if settings.ready_file:  # atomically: a watcher must never read a half-written file
                partial = settings.ready_file.with_name(settings.ready_file.name + ".tmp")
                partial.write_text(json.dumps(endpoints))
                partial.replace(settings.ready_file)

        async def stop_grpc() -> None:
            if self.grpc is not None:
                await self.grpc.stop(grace_s=min(settings.graceful_timeout_s, 5.0))

        hooks: dict[str, list[Callable[[], Awaitable[Any]]]] = {
            "after_startup": [start_grpc],
            "on_shutdown": [stop_grpc],
        }
        return FastStream(
            self.broker,
            lifespan=runtime_lifespan,
            logger=logging.getLogger(f"llmops.{settings.service_name}"),  # JSON via the root handler
            **hooks,  # type: ignore[arg-type]
        )
