"""Small helpers for tests that talk to the real Kafka: topics, publishing, reading, offsets."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from google.protobuf.message import DecodeError, Message
from llmops.query.v1.events_pb2 import QueryRequested

from shared.events import HEADER_EVENT_TYPE, event_headers, new_meta

M = TypeVar("M", bound=Message)


def unique_topic(prefix: str) -> str:
    return f"test.{prefix}.{uuid.uuid4().hex[:8]}"


async def create_topics(bootstrap: str, *names: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


def query_event(question: str, tenant: str = "tenant-a") -> QueryRequested:
    return QueryRequested(meta=new_meta(tenant_id=tenant, producer="test"), question=question)


async def produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, dict[str, str]]]) -> None:
    """Publish (key, value, headers) records with a plain aiokafka producer (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
        await producer.flush()
    finally:
        await producer.stop()


async def produce_events(bootstrap: str, topic: str, events: list[Any]) -> None:
    await produce_raw(
        bootstrap,
        topic,
        [(e.meta.correlation_id.encode(), e.SerializeToString(), event_headers(e)) for e in events],
    )


async def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read a topic from the start until `expected` records arrived (or time runs out)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
    return partitions


async def commit_group_at_end(bootstrap: str, topic: str, group: str) -> None:
    """Commit `group`'s offsets at `topic`'s end, so a service that joins it sees only new records
    rather than the backlog that earlier tests left on a shared topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.commit(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_lag(bootstrap: str, topic: str, group: str) -> int:
    """Records of `topic` not yet committed by `group` (0 means everything was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        ends = await consumer.end_offsets(partitions)
        lag = 0
        for tp in partitions:
            committed = await consumer.committed(tp) or 0
            lag += ends[tp] - committed
        return lag
    finally:
        await consumer.stop()


def effects(db: Path) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT event_id, correlation_id, question, trace_id, traceparent, pid FROM effects"
        ).fetchall()


async def wait_for(predicate: Any, timeout_s: float = 60.0, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())


def decode_records(records: list[Any], message_type: type[M]) -> list[tuple[Any, M]]:
    """(record, event) for the records that are `message_type` events. Other payloads on a shared
    catalog topic (the poison-input test floods them with fuzz) are skipped, not parsed."""
    decoded = []
    for record in records:
        kind = dict(record.headers or ()).get(HEADER_EVENT_TYPE)
        if kind is not None and kind.decode(errors="replace") != message_type.DESCRIPTOR.full_name:
            continue
        try:
            decoded.append((record, message_type.FromString(record.value)))
        except DecodeError:
            continue
    return decoded


async def topic_events(bootstrap: str, topic: str, message_type: type[M], timeout_s: float = 1.5) -> list[M]:
    """Every `message_type` event on `topic` so far (read from the start for `timeout_s`)."""
    records = await read_all(bootstrap, topic, expected=100_000, timeout_s=timeout_s)
    return [event for _, event in decode_records(records, message_type)]
