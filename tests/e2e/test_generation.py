"""Generation on the real Triton (tiny_llm) through the generator as a separate process
(issue: generation on Triton)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.query.v1.events_pb2 import (
    ContextRetrieved,
    GenerationChunk,
    QueryAnswered,
    QueryFailed,
    QueryRequested,
)
from llmops.query.v1.query_pb2 import FailureReason, RetrievedChunk

from shared.events import new_meta
from shared.topics import CONTEXT_RETRIEVED
from tests.support.kafka_tools import (
    commit_group_at_end,
    create_topics,
    produce_events,
    read_all,
    unique_topic,
)
from tests.support.processes import ServiceProcess, closed_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PASSAGE = "Kafka keeps an ordered log for every partition. Consumers read it in order."
POLICY = {
    "default": {"model": "tiny_llm", "version": ""},
    "pinned": {"tenant-ghost": {"model": "ghost_llm", "version": ""}},  # a model Triton does not serve
    "canary": [],
}


def generator(
    kafka: str, triton_url: str, workdir: Path, name: str, tenants: str = "tenant-a,tenant-ghost"
) -> ServiceProcess:
    prefix = "LLMOPS_GENERATOR_"
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_TRITON_GRPC_URL": triton_url,
        "LLMOPS_TENANTS_KNOWN": tenants,
        f"{prefix}ROUTING_POLICY": json.dumps(POLICY),
        f"{prefix}CONSUMER_GROUP": f"generator-{name}",
        f"{prefix}GRPC_PORT": "0",
        f"{prefix}METRICS_PORT": "0",
    }
    return ServiceProcess(name, ["-m", "services.generator"], env, workdir, env_prefix=prefix).start(
        timeout_s=120
    )


@pytest.fixture(scope="module")
def live_generator(
    kafka: str, triton: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    proc = generator(kafka, triton, tmp_path_factory.mktemp("gen"), "gen-live")
    yield proc
    proc.kill()


def context_event(
    tenant: str, reply_topic: str, *, deadline_s: float = 30.0, stream: bool = True
) -> ContextRetrieved:
    deadline = Timestamp()
    deadline.FromNanoseconds(int((time.time() + deadline_s) * 1e9))
    request = QueryRequested(
        meta=new_meta(tenant_id=tenant, producer="test"),
        question="How does Kafka keep records?",
        reply_topic=reply_topic,
        deadline=deadline,
        stream=stream,
    )
    return ContextRetrieved(
        meta=new_meta(tenant_id=tenant, producer="retriever", correlation_id=request.meta.correlation_id),
        request=request,
        chunks=[
            RetrievedChunk(
                chunk_id="kafka.md#0",
                document_id="kafka.md",
                text=PASSAGE,
                source_uri="file:///kafka.md",
                score=0.9,
            ),
            RetrievedChunk(
                chunk_id="bread.md#0", document_id="bread.md", text="Bread needs yeast.", score=0.2
            ),
        ],
    )


async def replies(kafka: str, topic: str, correlation_id: str, expected: int, timeout_s: float = 30) -> list:  # type: ignore[type-arg]
    records = await read_all(kafka, topic, expected=expected, timeout_s=timeout_s)
    return [r for r in records if r.key == correlation_id.encode()]


async def test_streamed_answer_cites_the_supplied_chunk(kafka: str, live_generator: ServiceProcess) -> None:
    reply_topic = unique_topic("replies")
    await create_topics(kafka, reply_topic, partitions=1)
    event = context_event("tenant-a", reply_topic)
    await produce_events(kafka, CONTEXT_RETRIEVED.name, [event])
    records = await replies(kafka, reply_topic, event.meta.correlation_id, expected=20)
    types = [dict(r.headers)["event-type"].decode() for r in records]
    assert types[-1] == "llmops.query.v1.QueryAnswered", (types, live_generator.log_tail())
    chunks = []
    for record in records[:-1]:
        chunk = GenerationChunk()
        chunk.ParseFromString(record.value)
        chunks.append((record.timestamp, chunk))
    answered = QueryAnswered()
    answered.ParseFromString(records[-1].value)

    # Tokens arrive incrementally: several pieces, in order, each published before the final answer.
    assert len(chunks) >= 5
    assert [c.sequence for _, c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for _, c in chunks).strip() == answered.answer
    stamps = [t for t, _ in chunks] + [records[-1].timestamp]
    assert stamps == sorted(stamps)
    assert chunks[0][0] <= records[-1].timestamp

    assert answered.answer.startswith("Kafka keeps an ordered log for every partition.")
    assert [c.chunk_id for c in answered.citations] == ["kafka.md#0"]
    assert answered.citations[0].marker == 1 and answered.citations[0].source_uri == "file:///kafka.md"
    assert answered.model_name == "tiny_llm"
    assert answered.prompt_template_id == "grounded_qa" and answered.prompt_template_version
    stages = {t.stage: t.duration_ms for t in answered.timings}
    assert {"queue", "first_token", "generate"} <= set(stages)
    assert 0 < stages["first_token"] <= stages["generate"]
    assert answered.usage.completion_tokens == len(chunks) and answered.usage.prompt_tokens > 0


async def test_model_not_loaded_fails_clearly_within_the_deadline(
    kafka: str, live_generator: ServiceProcess
) -> None:
    reply_topic = unique_topic("ghost")
    await create_topics(kafka, reply_topic, partitions=1)
    event = context_event("tenant-ghost", reply_topic, deadline_s=4.0)
    started = time.time()
    await produce_events(kafka, CONTEXT_RETRIEVED.name, [event])
    records = await replies(kafka, reply_topic, event.meta.correlation_id, expected=1, timeout_s=15)
    assert records, live_generator.log_tail()
    failed = QueryFailed()
    failed.ParseFromString(records[0].value)
    assert failed.reason in (
        FailureReason.FAILURE_REASON_UNAVAILABLE,
        FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
    )
    assert "ghost_llm" in failed.detail and failed.failed_stage == "generator"
    assert records[0].timestamp / 1000 - started < 4.0 + 2.0  # answered by the deadline (plus bus slack)
    # The service keeps running and answers the next request.
    assert live_generator.proc is not None and live_generator.proc.poll() is None
    await test_streamed_answer_cites_the_supplied_chunk(kafka, live_generator)


async def test_triton_down_gives_query_failed_and_the_service_keeps_running(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its own tenant: the live generator (another consumer group) refuses these as unknown.
    workdir = tmp_path_factory.mktemp("gen-down")
    # Only this test's events: a new group would otherwise first work through every earlier
    # test's records on the shared topic, which on a busy CI machine can outlast the deadline.
    await commit_group_at_end(kafka, CONTEXT_RETRIEVED.name, "generator-gen-down")
    proc = generator(kafka, f"127.0.0.1:{closed_port()}", workdir, "gen-down", tenants="tenant-down")
    try:
        reply_topic = unique_topic("down")
        await create_topics(kafka, reply_topic, partitions=1)
        events = [context_event("tenant-down", reply_topic, deadline_s=6.0) for _ in range(2)]
        await produce_events(kafka, CONTEXT_RETRIEVED.name, events)
        # 4 replies: one failure from this generator per event, and the live generator's refusal
        # of an unknown tenant.
        everything = await read_all(kafka, reply_topic, expected=4, timeout_s=30)
        for event in events:
            records = [r for r in everything if r.key == event.meta.correlation_id.encode()]
            failures, details = [], []
            for record in records:
                failed = QueryFailed()
                failed.ParseFromString(record.value)
                details.append(failed.detail)
                if "unavailable after retries" in failed.detail:
                    failures.append(failed)
            assert len(failures) == 1, (details, proc.log_tail())
            assert failures[0].reason in (
                FailureReason.FAILURE_REASON_UNAVAILABLE,
                FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
            )
        assert proc.proc is not None and proc.proc.poll() is None
    finally:
        proc.kill()
