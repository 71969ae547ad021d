"""Producers compress their record batches as KafkaSettings.compression_type says; consumers read any."""

from __future__ import annotations

import asyncio

import pytest
from llmops.query.v1.events_pb2 import QueryRequested
from prometheus_client import CollectorRegistry

from shared.bus import create_broker, publish_event
from shared.infra.stack import Stack
from shared.settings import KafkaSettings
from tests.support.kafka_tools import create_topics, query_event, read_all, unique_topic

pytestmark = pytest.mark.integration

EVENTS = 20
# A question as long as an answer with its context, as repetitive as retrieved chunks are.
QUESTION = "Kafka stores every topic as partitions of an ordered log. " * 300


async def _publish(kafka: str, compression: str) -> tuple[str, list[QueryRequested]]:
    topic = unique_topic(f"compression-{compression}")
    await create_topics(kafka, topic, partitions=1)
    settings = KafkaSettings(bootstrap_servers=kafka, compression_type=compression)
    broker = create_broker(settings, guard=None, service="test-compression", registry=CollectorRegistry())
    await asyncio.wait_for(broker.start(), 60)
    sent = [query_event(f"{i}: {QUESTION}") for i in range(EVENTS)]
    try:
        for event in sent:
            await publish_event(broker, topic, event, key=event.meta.correlation_id)
    finally:
        await broker.stop()
    return topic, sent


def _log_bytes(stack: Stack, topic: str) -> int:
    [partition] = (stack.kafka.node_dir(0) / "data").glob(f"{topic}-0")
    return sum(segment.stat().st_size for segment in partition.glob("*.log"))


async def test_lz4_batches_are_smaller_on_the_broker_and_read_back_the_same(
    kafka: str, test_stack: Stack
) -> None:
    sizes: dict[str, int] = {}
    for compression in ("none", "lz4"):
        topic, sent = await _publish(kafka, compression)
        records = await read_all(kafka, topic, expected=EVENTS)
        received = [QueryRequested.FromString(record.value) for record in records]
        assert sorted(e.meta.event_id for e in received) == sorted(e.meta.event_id for e in sent)
        assert {e.question for e in received} == {e.question for e in sent}
        sizes[compression] = _log_bytes(test_stack, topic)
    assert sizes["none"] > EVENTS * len(QUESTION)  # stored as sent
    assert sizes["lz4"] * 5 < sizes["none"], sizes
