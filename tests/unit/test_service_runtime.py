"""ServiceRuntime's batch consumers: a record that arrives after a quiet spell is handed over by the
poll that is waiting, not after a blind sleep; several consumers of one process are members of its group;
a bulk consumer's batch message leaves out the records' headers; a lingering consumer spaces out its
small batches.

FastStream's batch subscriber polls with getmany(timeout_ms=batch_timeout_ms) and sleeps
batch_timeout_ms after a poll that came back empty. The fake consumer below behaves like aiokafka's
getmany (returns at the first record, or empty once timeout_ms has passed), so the subscriber's own
get_msg shows which of the two a late record meets. Building the runtime does no I/O.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser
from llmops.query.v1.events_pb2 import QueryRequested

from shared.bus import BATCH_POLL_TIMEOUT_MS, headerless_batch
from shared.service import LightTrafficLinger, Route, ServiceRuntime
from shared.settings import ServiceSettings

QUIET_S = 0.3  # longer than FastStream's default poll timeout (200 ms)


class LateRecordConsumer:
    """aiokafka's getmany over one record that arrives QUIET_S after the first poll."""

    def __init__(self) -> None:
        self.record = object()
        self.polls: list[int] = []
        self._arrived = asyncio.Event()

    def arrive_later(self) -> None:
        asyncio.get_running_loop().call_later(QUIET_S, self._arrived.set)

    async def getmany(self, *, timeout_ms: int, max_records: int | None = None) -> dict[str, list[Any]]:
        self.polls.append(timeout_ms)
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        return {"topic-0": [self.record]}


async def _noop(decoded: Any) -> list[Any]:
    return []


def _batch_subscriber() -> Any:
    runtime = ServiceRuntime(ServiceSettings(service_name="probe", group_id="probe"))
    runtime.consume_routes({"probe.in": Route(QueryRequested, _noop)}, max_records=32, title="probe")
    (subscriber,) = runtime.broker.subscribers
    return subscriber


def test_batch_poll_waits_as_long_as_configured() -> None:
    assert _batch_subscriber().batch_timeout_ms == BATCH_POLL_TIMEOUT_MS


async def test_record_after_a_quiet_spell_is_returned_by_the_waiting_poll() -> None:
    subscriber = _batch_subscriber()
    consumer = LateRecordConsumer()
    consumer.arrive_later()
    # The whole quiet spell and the record fit in one poll: with FastStream's default (200 ms) this
    # first call ends empty, after a poll and a blind sleep, and the record waits for the next one.
    batch = await asyncio.wait_for(subscriber.get_msg(consumer), timeout=5)
    assert batch == (consumer.record,)
    assert consumer.polls == [BATCH_POLL_TIMEOUT_MS]


async def test_faststream_default_poll_would_miss_the_late_record() -> None:
    """The control: the same subscriber at FastStream's default poll timeout returns nothing at first."""
    subscriber = _batch_subscriber()
    subscriber.batch_timeout_ms = 200
    consumer = LateRecordConsumer()
    consumer.arrive_later()
    assert await asyncio.wait_for(subscriber.get_msg(consumer), timeout=5) == ()


def test_consumers_are_members_of_the_service_group_with_one_handler() -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="probe", group_id="probe"))
    routes = {"probe.a": Route(QueryRequested, _noop), "probe.b": Route(QueryRequested, _noop)}
    runtime.consume_routes(routes, max_records=32, title="probe", consumers=3, heartbeat_interval_ms=500)
    subscribers: list[Any] = list(runtime.broker.subscribers)
    assert len(subscribers) == 3
    for subscriber in subscribers:
        assert set(subscriber.topic_names) == {"probe.a", "probe.b"}
        assert subscriber.group_id == runtime.settings.group_id
        assert subscriber._connection_args["heartbeat_interval_ms"] == 500
    handlers = {subscriber.calls[0].handler._original_call for subscriber in subscribers}
    assert len(handlers) == 1  # one routing function: every member routes records the same way


def test_consumers_must_be_at_least_one() -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="probe", group_id="probe"))
    with pytest.raises(ValueError, match="at least 1"):
        runtime.consume_routes(
            {"probe.a": Route(QueryRequested, _noop)}, max_records=32, title="probe", consumers=0
        )


def _record(offset: int, headers: tuple[tuple[str, bytes], ...]) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        "probe.in", 0, offset, 1_700_000_000_000 + offset, 0, b"k", f"v{offset}".encode(), None, 1, 2, headers
    )


async def test_a_headerless_batch_is_faststreams_message_without_the_records_headers() -> None:
    headers = (("event-type", b"llmops.query.v1.QueryRequested"), ("traceparent", b"00-ab-cd-01"))
    records = tuple(_record(offset, headers) for offset in range(10, 14))
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    parsed: list[tuple[Any, ...]] = []

    async def parse(batch: tuple[Any, ...]) -> Any:
        parsed.append(batch)
        return await parser.parse_batch(batch)

    message = await headerless_batch(records, parse)
    assert parsed == [records[:1]]  # FastStream decodes one record's headers, not every record's
    assert message.raw_message == records and message.body == [b"v10", b"v11", b"v12", b"v13"]
    assert message.headers == {} and message.batch_headers == []
    assert message.message_id == f"10-13-{records[0].timestamp}"
    assert isinstance(message, KafkaAckableMessage)  # acknowledged as FastStream's own batch message
    assert records[3].headers == headers  # handlers still read each record's headers


def test_a_bulk_consumer_takes_the_headerless_parser() -> None:
    parsers = []
    for record_headers in (False, True):
        runtime = ServiceRuntime(ServiceSettings(service_name="probe", group_id="probe"))
        routes = {"probe.in": Route(QueryRequested, _noop)}
        runtime.consume_routes(routes, max_records=32, title="probe", record_headers=record_headers)
        (subscriber,) = runtime.broker.subscribers
        # FastStream composes a subscriber's parser with its own (ParserComposition): ours gets both
        parsers.append(subscriber._call_options.parser)
    assert parsers == [headerless_batch, None]


class _Clock:
    """A clock that only the fake sleep moves, so the linger's waits are read, not timed."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_small_batches_are_spaced_and_large_ones_are_not() -> None:
    clock = _Clock()
    linger = LightTrafficLinger(2.0, below_records=100, clock=clock, sleep=clock.sleep)
    await linger.before(5)  # the first small batch: nothing to space it from
    linger.after(5)
    clock.now += 0.5
    await linger.before(7)  # 0.5 s after a small batch: waits out the other 1.5 s
    assert clock.slept == [1.5]
    linger.after(7)
    clock.now += 3.0
    await linger.before(3)  # more than 2 s after: goes at once
    assert clock.slept == [1.5]
    linger.after(3)
    await linger.before(500)  # a large batch never waits, even right after a small one
    linger.after(500)
    await linger.before(2)  # the tail after a large batch (a backlog's end) goes at once
    assert clock.slept == [1.5]
    linger.after(2)
    await linger.before(2)  # and the next small one is spaced again
    assert clock.slept == [1.5, 2.0]


def test_each_consumer_lingers_on_its_own() -> None:
    made: list[LightTrafficLinger] = []

    def linger() -> LightTrafficLinger:
        made.append(LightTrafficLinger(2.0, below_records=100))
        return made[-1]

    runtime = ServiceRuntime(ServiceSettings(service_name="probe", group_id="probe"))
    routes = {"probe.a": Route(QueryRequested, _noop)}
    runtime.consume_routes(routes, max_records=32, title="probe", consumers=2, linger=linger)
    subscribers: list[Any] = list(runtime.broker.subscribers)
    handlers = {subscriber.calls[0].handler._original_call for subscriber in subscribers}
    assert len(made) == 2 and len(handlers) == 2  # one spacing per member: members never wait on each other
