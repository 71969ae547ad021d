"""EventGuard logic with FastStream's in-memory TestKafkaBroker (the real-broker tests are in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from faststream.kafka import KafkaMessage, TestKafkaBroker
from faststream.middlewares import AckPolicy
from llmops.query.v1.events_pb2 import QueryRequested

from shared.bus import DLQ_EXCEPTION, DLQ_REASON, DLQ_TOPIC, EventGuard, create_broker, protobuf_decoder
from shared.errors import PermanentError
from shared.events import event_headers, new_meta
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
