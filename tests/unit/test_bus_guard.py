"""EventGuard logic with FastStream's in-memory TestKafkaBroker (the real-broker tests are in tests/e2e)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.exceptions import NackMessage
from faststream.kafka import KafkaMessage, TestKafkaBroker
from faststream.kafka.opentelemetry.provider import BatchKafkaTelemetrySettingsProvider
from faststream.kafka.prometheus.provider import BatchKafkaMetricsSettingsProvider
from faststream.middlewares import AckPolicy
from llmops.query.v1.events_pb2 import QueryRequested
from opentelemetry.semconv.trace import SpanAttributes

from shared.bus import (
    DLQ_EXCEPTION,
    DLQ_REASON,
    DLQ_TOPIC,
    EventGuard,
    _BatchMetricsAttributes,
    _BatchTelemetryAttributes,
    create_broker,
    protobuf_decoder,
)
from shared.errors import PermanentError, RetryableError
from shared.events import HEADER_EVENT_TYPE, event_headers, new_meta
from shared.idempotency import MemoryIdempotencyStore
from shared.settings import KafkaSettings

DLQ = "test.dead-letter"


@pytest.fixture
def guarded() -> tuple[Any, list[str], list[dict[str, str]]]:
    guard = EventGuard(service="unit", group_id="g", dead_letter_topic=DLQ, store=MemoryIdempotencyStore())
    broker = create_broker(KafkaSettings(), guard=guard, service="unit")
    handled: list[str] = []
    dead: list[dict[str, str]] = []

    @broker.subscriber(
        "in", group_id="g", ack_policy=AckPolicy.NACK_ON_ERROR, decoder=protobuf_decoder(QueryRequested)
    )
    async def handle(event: QueryRequested) -> None:
        if event.question == "boom":
            raise PermanentError("boom is not a question")
        handled.append(event.question)

    @broker.subscriber(DLQ, group_id="dlq-reader")
    async def on_dead(body: bytes) -> None:
        message: KafkaMessage = broker.context.get_local("message")
        dead.append(dict(message.headers))

    return broker, handled, dead


def event(question: str) -> QueryRequested:
    return QueryRequested(meta=new_meta(tenant_id="t", producer="unit"), question=question)


async def test_valid_event_is_handled_once_even_if_redelivered(guarded: Any) -> None:
    broker, handled, dead = guarded
    async with TestKafkaBroker(broker) as test_broker:
        e = event("hello")
        for _ in range(2):
            await test_broker.publish(e.SerializeToString(), "in", headers=event_headers(e))
    assert handled == ["hello"]
    assert dead == []


async def test_garbage_and_missing_meta_go_to_the_dead_letter_topic(guarded: Any) -> None:
    broker, handled, dead = guarded
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"\xff\xfe\xfd", "in")
        await test_broker.publish(QueryRequested(question="no meta").SerializeToString(), "in")
    assert handled == []
    assert [d[DLQ_TOPIC] for d in dead] == ["in", "in"]
    assert all(d[DLQ_EXCEPTION].endswith("MalformedEventError") for d in dead)
    assert "meta.event_id is empty" in dead[1][DLQ_REASON]


async def test_wrong_event_type_header_is_rejected(guarded: Any) -> None:
    broker, handled, dead = guarded
    async with TestKafkaBroker(broker) as test_broker:
        e = event("typed")
        await test_broker.publish(
            e.SerializeToString(), "in", headers={"event-type": "llmops.other.v1.Thing"}
        )
    assert handled == []
    assert "event-type header" in dead[0][DLQ_REASON]


async def test_permanent_handler_error_is_dead_lettered_with_reason(guarded: Any) -> None:
    broker, handled, dead = guarded
    async with TestKafkaBroker(broker) as test_broker:
        for q in ("boom", "after"):
            e = event(q)
            await test_broker.publish(e.SerializeToString(), "in", headers=event_headers(e))
    assert handled == ["after"]
    assert dead[0][DLQ_REASON] == "boom is not a question"
    assert dead[0][DLQ_EXCEPTION] == "shared.errors.PermanentError"


# --- EventGuard.process_records: a fast path that takes records undecoded, the per-event path behind it


class _Broker:
    def __init__(self) -> None:
        self.published: list[tuple[bytes, str, dict[str, str]]] = []

    async def publish(self, body: bytes, topic: str, *, key: Any = None, headers: Any = None) -> None:
        self.published.append((body, topic, dict(headers or {})))


def _record(offset: int, value: bytes, headers: dict[str, str] | None = None) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic="in",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=[(k, v.encode()) for k, v in (headers or {}).items()],
    )


class _Sink:
    """A fast path that takes, declines or fails, and the per-event handler behind it."""

    def __init__(self, outcome: bool | BaseException) -> None:
        self.outcome = outcome
        self.fast: list[int] = []
        self.per_event: list[str] = []

    async def handle_records(self, records: Sequence[ConsumerRecord[Any, Any]]) -> bool:
        self.fast.append(len(records))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def handle(self, decoded: list[tuple[ConsumerRecord[Any, Any], QueryRequested]]) -> list[Any]:
        self.per_event.extend(e.question for _, e in decoded)
        return []


def _guard() -> tuple[EventGuard, _Broker]:
    guard = EventGuard(
        service="unit",
        group_id="g",
        dead_letter_topic=DLQ,
        store=MemoryIdempotencyStore(),
        redelivery_pause_s=0,
    )
    broker = _Broker()
    guard.broker = broker  # type: ignore[assignment]
    return guard, broker


def _batch() -> list[ConsumerRecord[Any, Any]]:
    events = [event("one"), event("two")]
    return [
        *(_record(i, e.SerializeToString(), event_headers(e)) for i, e in enumerate(events)),
        _record(2, b"\xff not protobuf"),
    ]


async def test_a_batch_the_fast_path_takes_skips_the_per_event_path() -> None:
    guard, broker = _guard()
    sink = _Sink(True)
    await guard.process_records(_batch(), QueryRequested, sink.handle_records, sink.handle)
    assert (sink.fast, sink.per_event, broker.published) == ([3], [], [])


@pytest.mark.parametrize("outcome", [False, RuntimeError("a bug in the fast path")])
async def test_a_declined_or_failed_batch_is_judged_event_by_event(outcome: bool | BaseException) -> None:
    guard, broker = _guard()
    sink = _Sink(outcome)
    await guard.process_records(_batch(), QueryRequested, sink.handle_records, sink.handle)
    assert sink.fast == [3]
    assert sink.per_event == ["one", "two"]
    [(body, topic, headers)] = broker.published  # the garbage record, with the reason
    assert (body, topic) == (b"\xff not protobuf", DLQ)
    assert "not a valid" in headers[DLQ_REASON]


async def test_a_transient_failure_of_the_fast_path_redelivers_the_batch() -> None:
    guard, broker = _guard()
    sink = _Sink(RetryableError("ClickHouse is down"))
    with pytest.raises(NackMessage):
        await guard.process_records(_batch(), QueryRequested, sink.handle_records, sink.handle)
    assert (sink.per_event, broker.published) == ([], [])


async def test_a_record_of_another_event_type_never_takes_the_fast_path() -> None:
    guard, broker = _guard()
    sink = _Sink(True)
    other = QueryRequested(meta=new_meta(tenant_id="t", producer="unit"), question="mislabelled")
    records = [_record(0, other.SerializeToString(), {HEADER_EVENT_TYPE: "llmops.query.v1.QueryAnswered"})]
    await guard.process_records(records, QueryRequested, sink.handle_records, sink.handle)
    assert sink.fast == []
    [(_, _, headers)] = broker.published
    assert "event-type header" in headers[DLQ_REASON]


# --- the batch attribute providers of the tracing and metrics middlewares


class _BatchMessage:
    """What FastStream's attribute providers read of a consumed batch."""

    def __init__(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        self.raw_message = tuple(records)
        self.body = [r.value for r in records]
        self.message_id = "m-1"
        self.correlation_id = "c-1"


def test_batch_attributes_equal_faststreams_without_copying_the_batch() -> None:
    batch = _BatchMessage([_record(i, bytes(100 + i)) for i in range(5)])
    ours_span = _BatchTelemetryAttributes().get_consume_attrs_from_message(batch)  # type: ignore[arg-type]
    theirs_span = BatchKafkaTelemetrySettingsProvider().get_consume_attrs_from_message(batch)  # type: ignore[arg-type]
    assert ours_span == theirs_span
    assert ours_span[SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES] == sum(100 + i for i in range(5))
    ours_metrics = _BatchMetricsAttributes().get_consume_attrs_from_message(batch)  # type: ignore[arg-type]
    theirs_metrics = BatchKafkaMetricsSettingsProvider().get_consume_attrs_from_message(batch)  # type: ignore[arg-type]
    assert ours_metrics == theirs_metrics
