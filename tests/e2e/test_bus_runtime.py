"""The shared bus runtime across real processes on the real Kafka broker (issue: foundation).

Each test runs the relay service (tests/support/relay_app.py, built on shared.service exactly as
the platform's services are) as separate OS processes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from shared.bus import (
    DLQ_EXCEPTION,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    create_broker,
    publish_event,
)
from shared.settings import KafkaSettings
from shared.topics import DEAD_LETTER
from tests.support.kafka_tools import (
    committed_lag,
    create_topics,
    effects,
    produce_events,
    produce_raw,
    query_event,
    read_all,
    unique_topic,
    wait_for,
)
from tests.support.processes import ServiceProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def relays(workdir: Path) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.kill()


def relay(
    kafka: str, workdir: Path, name: str, input_topic: str, output_topic: str = "", **extra: str
) -> ServiceProcess:
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_RELAY_SERVICE_NAME": name,
        "LLMOPS_RELAY_INPUT_TOPIC": input_topic,
        "LLMOPS_RELAY_OUTPUT_TOPIC": output_topic,
        "LLMOPS_RELAY_EFFECTS_DB": str(workdir / f"{name}.effects.db"),
        "LLMOPS_RELAY_CONSUMER_GROUP": f"group-{name}-{input_topic}",
        **{f"LLMOPS_RELAY_{k.upper()}": v for k, v in extra.items()},
    }
    return ServiceProcess(name, ["tests/support/relay_app.py"], env, workdir, env_prefix="LLMOPS_RELAY_")


async def dead_letters_from(kafka: str, topic: str, expected: int) -> list[dict[str, str]]:
    records = await read_all(kafka, DEAD_LETTER.name, expected=10_000, timeout_s=5)
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    return [h for h in headers if h.get(DLQ_TOPIC) == topic]


async def test_event_crosses_two_service_processes_with_trace_context(
    kafka: str, workdir: Path, relays: list[ServiceProcess]
) -> None:
    first, second, sink = unique_topic("hop1"), unique_topic("hop2"), unique_topic("hop3")
    await create_topics(kafka, first, second, sink)
    relays.append(relay(kafka, workdir, "relay-a", first, second).start())
    relays.append(relay(kafka, workdir, "relay-b", second, sink).start())

    # The test is the upstream producer: it publishes inside a span whose trace id we know.
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    broker = create_broker(KafkaSettings(bootstrap_servers=kafka), guard=None, service="test-producer")
    await broker.start()
    event = query_event("where do traces go?")
    with provider.get_tracer("test").start_as_current_span("upstream") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await publish_event(broker, first, event, key=event.meta.correlation_id)
    await broker.stop()

    b_db = workdir / "relay-b.effects.db"
    assert await wait_for(lambda: len(effects(b_db)) == 1), relays[1].log_tail()
    [(event_id, correlation_id, question, seen_trace_id, traceparent, pid)] = effects(b_db)
    a_rows = effects(workdir / "relay-a.effects.db")
    assert [r[0] for r in a_rows] == [event.meta.event_id]
    # relay-b got the event relay-a published: a new event id, the same request and the same trace.
    assert event_id != event.meta.event_id
    assert correlation_id == event.meta.correlation_id
    assert question == "where do traces go?"
    assert seen_trace_id == trace_id
    assert traceparent.split("-")[1] == trace_id
    assert pid == relays[1].proc.pid and pid != relays[0].proc.pid  # type: ignore[union-attr]


async def test_malformed_and_permanent_failures_are_dead_lettered_and_consumer_goes_on(
    kafka: str, workdir: Path, relays: list[ServiceProcess]
) -> None:
    topic = unique_topic("dlq")
    await create_topics(kafka, topic, partitions=1)
    proc = relay(kafka, workdir, "relay-dlq", topic).start()
    relays.append(proc)

    good_before, permanent, good_after = (
        query_event("first"),
        query_event("permanent: refuse me"),
        query_event("last"),
    )
    await produce_events(kafka, topic, [good_before])
    await produce_raw(kafka, topic, [(b"bad-key", b"\xff\x00 not a protobuf \x13", {})])
    await produce_events(kafka, topic, [permanent, good_after])

    db = workdir / "relay-dlq.effects.db"
    assert await wait_for(lambda: len(effects(db)) == 2), proc.log_tail()
    assert [row[2] for row in effects(db)] == ["first", "last"]

    dead = await dead_letters_from(kafka, topic, expected=2)
    assert len(dead) == 2, dead
    by_offset = {int(h[DLQ_OFFSET]): h for h in dead}
    assert set(by_offset) == {1, 2}
    assert "MalformedEventError" in by_offset[1][DLQ_EXCEPTION]
    assert "not a valid llmops.query.v1.QueryRequested" in by_offset[1][DLQ_REASON]
    assert "PermanentError" in by_offset[2][DLQ_EXCEPTION]
    assert "refuse me" in by_offset[2][DLQ_REASON]
    for headers in dead:
        assert headers[DLQ_PARTITION] == "0"
        assert headers[DLQ_GROUP] == f"group-relay-dlq-{topic}"
    # Nothing is left uncommitted: all four records were dealt with.
    assert await wait_for_async(lambda: committed_lag(kafka, topic, f"group-relay-dlq-{topic}"), 0)
    assert proc.proc is not None and proc.proc.poll() is None  # still running


async def wait_for_async(probe, expected: int, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.25)):
        if await probe() == expected:
            return True
        await asyncio.sleep(0.25)
    return False


async def test_duplicate_event_id_is_processed_once(
    kafka: str, workdir: Path, relays: list[ServiceProcess]
) -> None:
    topic = unique_topic("dup")
    await create_topics(kafka, topic)
    proc = relay(kafka, workdir, "relay-dup", topic).start()
    relays.append(proc)
    event, other = query_event("once only"), query_event("marker")
    await produce_events(kafka, topic, [event, event, event])
    await produce_events(kafka, topic, [other])
    db = workdir / "relay-dup.effects.db"
    assert await wait_for(lambda: len(effects(db)) >= 2), proc.log_tail()
    await asyncio.sleep(1.0)  # give any wrongly re-processed copy time to show up
    counts = Counter(row[0] for row in effects(db))
    assert counts == {event.meta.event_id: 1, other.meta.event_id: 1}


async def test_transient_failure_is_redelivered_not_lost(
    kafka: str, workdir: Path, relays: list[ServiceProcess]
) -> None:
    topic = unique_topic("transient")
    await create_topics(kafka, topic, partitions=1)
    proc = relay(kafka, workdir, "relay-transient", topic).start()
    relays.append(proc)
    flaky, after = query_event("transient-once: try again"), query_event("after")
    await produce_events(kafka, topic, [flaky, after])
    db = workdir / "relay-transient.effects.db"
    assert await wait_for(lambda: len(effects(db)) == 2), proc.log_tail()
    assert [row[2] for row in effects(db)] == ["transient-once: try again", "after"]
    assert await dead_letters_from(kafka, topic, expected=0) == []


@pytest.mark.slow
async def test_sigterm_mid_stream_then_restart_processes_each_event_exactly_once(
    kafka: str, workdir: Path, relays: list[ServiceProcess]
) -> None:
    topic = unique_topic("sigterm")
    await create_topics(kafka, topic)
    events = [query_event(f"q{i}") for i in range(1000)]
    await produce_events(kafka, topic, events)
    db = workdir / "relay-term.effects.db"

    first = relay(kafka, workdir, "relay-term", topic, processing_delay_ms="2").start()
    relays.append(first)
    assert await wait_for(lambda: len(effects(db)) >= 200, timeout_s=60), first.log_tail()
    assert first.terminate() == 0, first.log_tail()
    processed_before_restart = len(effects(db))
    assert processed_before_restart < 1000, "SIGTERM should land mid-stream; slow the relay down"

    second = relay(kafka, workdir, "relay-term", topic, processing_delay_ms="2").start()
    relays.append(second)
    assert await wait_for(lambda: len(effects(db)) >= 1000, timeout_s=120), second.log_tail()
    await asyncio.sleep(1.0)
    counts = Counter(row[0] for row in effects(db))
    assert set(counts) == {e.meta.event_id for e in events}
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
    assert len({row[5] for row in effects(db)}) == 2  # both processes did part of the work
