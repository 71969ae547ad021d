"""Poison input (issue: reliability): a flood of fuzzed protobuf payloads on every topic the services
consume, and fuzzed gRPC requests at the gateway. Embedder, retriever, generator, gateway and monitor
run as separate processes on the real Kafka, Weaviate, Triton and chdb.

Expected: no process crashes and every one stays SERVING; every record a consumer must refuse lands on
the dead-letter topic with a reason and its origin (topic, partition, offset) once per consuming
service; every consumer group commits to the end of its topics (nothing stuck); a valid query after
the flood is answered; every fuzzed gRPC call ends in time with OK or a documented status.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.ingest.v1.document_pb2 import Document
from llmops.query.v1.events_pb2 import QueryRequested
from llmops.query.v1.query_pb2 import RetrievalOptions

from services.gateway.auth import issue_key
from shared.bus import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_SERVICE, DLQ_TOPIC
from shared.events import HEADER_EVENT_ID, new_meta
from shared.infra.stack import Stack
from shared.topics import CATALOG, DEAD_LETTER, QUERY_REQUESTED, Topic
from tests.support import fuzz
from tests.support.kafka_tools import committed_lag, create_topics, produce_events, read_all, unique_topic
from tests.support.processes import REPO_ROOT, ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow, pytest.mark.floods_topics]

TENANT = "fuzz"
KNOWN = (TENANT,)
SERVICES = ("embedder", "retriever", "generator", "gateway", "monitor")
GROUP_PREFIX = "fuzz-"
PER_TOPIC = int(os.environ.get("LLMOPS_FUZZ_PER_TOPIC", "600"))  # 17 consumed topics: 10,200 records
GRPC_EXAMPLES = 300
DOC = "Kafka stores every topic as partitions of an ordered log. Consumers track offsets."

# What a fuzzed gRPC call may end with (README: status codes); never UNKNOWN or INTERNAL.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,
}

CONSUMED: tuple[Topic, ...] = tuple(
    t for t in CATALOG if t.message is not None and set(t.consumers) & set(SERVICES)
)


@dataclass
class Platform:
    procs: dict[str, ServiceProcess]
    key: str
    bootstrap: str
    workdir: Path

    def md(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.key),)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.procs["gateway"].grpc_target)


@pytest.fixture(scope="module")
def platform(
    kafka: str, weaviate: str, triton: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("poison")
    keys_file = workdir / "api-keys.json"
    key = issue_key(keys_file, TENANT)
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkPoison",
        "LLMOPS_TRITON_GRPC_URL": triton,
        "LLMOPS_TENANTS_KNOWN": ",".join(KNOWN),
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(workdir / "chdb"),
        **{f"LLMOPS_{name.upper()}_CONSUMER_GROUP": f"{GROUP_PREFIX}{name}" for name in SERVICES},
    }
    with platform_services(SERVICES, env, workdir) as procs:
        platform = Platform(procs, key, kafka, workdir)
        asyncio.run(_ingest(platform))
        yield platform


async def _ingest(platform: Platform) -> None:
    async with platform.channel() as channel:
        document = Document(document_id="kafka.md", source_uri="file:///kafka.md", content=DOC.encode())
        await ingest_grpc.IngestServiceStub(channel).Ingest(
            ingest_pb.IngestRequest(document=document, wait_indexed=True), metadata=platform.md(), timeout=120
        )


# ------------------------------------------------------------------ helpers


SUBSCRIPTIONS_SCRIPT = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    app = importlib.import_module(f"services.{name}.app").create_app()
    out[name] = sorted({t for s in app.broker.subscribers for t in s.topic_names})
print(json.dumps(out))
"""


def subscriptions(workdir: Path) -> dict[str, set[str]]:
    """service -> the topics its code subscribes to (built in a scratch process: no I/O, no ports)."""
    env = {**os.environ, "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(workdir / "scratch-chdb")}
    result = subprocess.run(
        [sys.executable, "-c", SUBSCRIPTIONS_SCRIPT, *SERVICES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {name: set(topics) for name, topics in json.loads(result.stdout.splitlines()[-1]).items()}


async def group_ids(bootstrap: str, service: str) -> list[str]:
    """The consumer groups of `service` (the gateway's reply group has a random suffix)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        name = f"{GROUP_PREFIX}{service}"
        return [
            g[0] for g in await admin.list_consumer_groups() if g[0] == name or g[0].startswith(name + ".")
        ]
    finally:
        await admin.close()


async def committed_topics(bootstrap: str, group: str) -> set[str]:
    """The topics `group` has committed offsets for."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp.topic for tp in await admin.list_consumer_group_offsets(group)}
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def produce(bootstrap: str, cases: list[fuzz.Case]) -> dict[int, tuple[int, int]]:
    """Send every case (batched, not one round trip each); case index -> (partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                case.topic.name,
                case.payload,
                key=f"fuzz-{case.index}".encode(),
                headers=[(k, v.encode()) for k, v in case.headers.items()],
            )
            for case in cases
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {case.index: (m.partition, m.offset) for case, m in zip(cases, metadata, strict=True)}


async def read_dead_letters(
    bootstrap: str,
    start: dict[TopicPartition, int],
    wanted: set[tuple[str, str, int, int]],
    timeout_s: float,
    marker: str | None = fuzz.FUZZ_HEADER,
) -> dict[tuple[str, str, int, int], dict[str, str]]:
    """Dead letters since `start` (those with a `marker` header), keyed (service, original topic,
    partition, offset), until every `wanted` key arrived or time ran out (empty `wanted`: what came
    within `timeout_s`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: dict[tuple[str, str, int, int], dict[str, str]] = {}
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while (not wanted or not wanted <= found.keys()) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    headers = {k: bytes(v).decode("utf-8", "replace") for k, v in record.headers or ()}
                    if marker is not None and marker not in headers:
                        continue
                    key = (
                        headers.get(DLQ_SERVICE, ""),
                        headers.get(DLQ_TOPIC, ""),
                        int(headers.get(DLQ_PARTITION, "-1")),
                        int(headers.get(DLQ_OFFSET, "-1")),
                    )
                    found[key] = headers
    finally:
        await consumer.stop()
    return found


async def serving(proc: ServiceProcess) -> bool:
    async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def assert_alive_and_serving(platform: Platform) -> None:
    for name, proc in platform.procs.items():
        assert proc.proc is not None and proc.proc.poll() is None, f"{name} died:\n{proc.log_tail()}"
        assert await serving(proc), f"{name} is not SERVING:\n{proc.log_tail()}"


async def wait_lag_zero(bootstrap: str, groups: dict[str, set[str]], timeout_s: float) -> dict[str, int]:
    """Lag per group/topic still left after `timeout_s` (empty: every group committed everything)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {}
        for group, topics in groups.items():
            for topic in sorted(topics):
                lag = await committed_lag(bootstrap, topic, group)
                if lag:
                    left[f"{group}/{topic}"] = lag
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(2)


# ------------------------------------------------------------------ the flood


async def test_fuzzed_events_are_dead_lettered_and_nothing_gets_stuck(platform: Platform) -> None:
    started = time.monotonic()
    bootstrap = platform.bootstrap
    subscribed = subscriptions(platform.workdir)
    consumers_of: dict[str, set[str]] = {}
    for service, topics in subscribed.items():
        for topic in topics:
            consumers_of.setdefault(topic, set()).add(service)
    # Every topic the catalog says a running service consumes has at least one real consumer.
    assert not [t.name for t in CONSUMED if not consumers_of.get(t.name)], consumers_of
    catalog_gaps = sorted(
        f"{t.name}: {s}"
        for t in CONSUMED
        for s in set(t.consumers) & set(SERVICES) - consumers_of.get(t.name, set())
    )
    print(f"catalog consumers that do not subscribe: {catalog_gaps}")

    cases = fuzz.corpus(CONSUMED, PER_TOPIC, KNOWN, nonce=uuid.uuid4().hex)
    generated = time.monotonic()
    assert len(cases) >= min(10_000, PER_TOPIC * len(CONSUMED))

    dlq_start = await end_offsets(bootstrap, DEAD_LETTER.name)
    positions = await produce(bootstrap, cases)
    produced = time.monotonic()

    expected: dict[tuple[str, str, int, int], tuple[fuzz.Case, str]] = {}
    for case in cases:
        partition, offset = positions[case.index]
        for service in sorted(consumers_of[case.topic.name]):
            if reason := fuzz.must_reject(case, service, KNOWN):
                expected[(service, case.topic.name, partition, offset)] = (case, reason)
    found = await read_dead_letters(bootstrap, dlq_start, set(expected), timeout_s=150)
    drained = time.monotonic()

    per_topic = Counter(key[1] for key in found)
    print(
        f"payloads sent: {len(cases)} ({Counter(c.kind for c in cases)}); must be dead-lettered: "
        f"{len(expected)} (service, record) pairs; dead letters read: {len(found)}; "
        f"per topic: {dict(per_topic)}; "
        f"timings: generate {generated - started:.1f}s, produce {produced - generated:.1f}s, "
        f"dead letters {drained - produced:.1f}s"
    )
    missing = [
        f"{service} {topic}[{partition}]@{offset} {case.kind} ({reason}): {case.payload[:40]!r}"
        for (service, topic, partition, offset), (case, reason) in expected.items()
        if (service, topic, partition, offset) not in found
    ]
    assert not missing, f"{len(missing)} records not dead-lettered, e.g.:\n" + "\n".join(missing[:20])
    for key, headers in found.items():
        if key in expected:
            case, _ = expected[key]
            assert headers[fuzz.FUZZ_HEADER] == str(case.index), key
            assert headers[DLQ_REASON].strip(), key

    await assert_alive_and_serving(platform)
    groups: dict[str, set[str]] = {}
    for service, topics in subscribed.items():
        for group in await group_ids(bootstrap, service):
            # A service may read in several groups (the generator's rollout log has one per replica):
            # each is held to the topics it has committed offsets for, all of them if it has none.
            groups[group] = (topics & await committed_topics(bootstrap, group)) or topics
    assert set(SERVICES) <= {g.removeprefix(GROUP_PREFIX).split(".")[0] for g in groups}, groups
    left = await wait_lag_zero(bootstrap, groups, timeout_s=60)
    assert not left, f"consumer groups stuck: {left}"
    await assert_alive_and_serving(platform)

    # The platform still answers a good question.
    async with platform.channel() as channel:
        response = await query_grpc.QueryServiceStub(channel).Query(
            query_pb.QueryRequest(question="How does Kafka store a topic?"),
            metadata=platform.md(),
            timeout=30,
        )
    assert response.answer.startswith("Kafka stores every topic"), response
    print(f"flood test took {time.monotonic() - started:.1f}s")


# ------------------------------------------------------------------ fuzzed gRPC calls


@dataclass
class Call:
    rpc: str
    request: Any
    timeout_s: float
    key: str | None  # None: the platform's valid key


_text = st.text(max_size=40)
_options = st.builds(
    RetrievalOptions,
    top_k=st.integers(0, 2**32 - 1) | st.integers(0, 60),
    alpha=st.floats(width=32) | st.floats(0, 1, width=32),
    score_threshold=st.floats(width=32) | st.just(0.0),
    metadata_filter=st.dictionaries(_text, _text, max_size=3),
)
_question = st.one_of(
    _text,
    st.sampled_from(["How does Kafka store a topic?", "", "   "]),
    st.text(min_size=3990, max_size=4100),
)
_query_fields = {
    "question": _question,
    "retrieval": _options | st.just(RetrievalOptions()),
    "prompt_template_id": st.sampled_from(["", "grounded_qa"]) | _text,
    "max_tokens": st.integers(0, 2**32 - 1) | st.integers(0, 64),
}
_document = st.builds(
    Document,
    document_id=_text | st.just("d" * 300),
    source_uri=_text | st.sampled_from(["file:///a.pdf", "file:///a.html", "file:///a.md"]),
    format=st.integers(0, 6),
    content=st.binary(max_size=200) | _text.map(str.encode),
    content_sha256=_text,
    metadata=st.dictionaries(_text, _text, max_size=3),
)
_requests = st.one_of(
    st.builds(lambda r: ("Query", r), st.builds(query_pb.QueryRequest, **_query_fields)),
    st.builds(lambda r: ("QueryStream", r), st.builds(query_pb.QueryStreamRequest, **_query_fields)),
    st.builds(
        lambda r: ("Ingest", r),
        st.builds(ingest_pb.IngestRequest, document=_document, wait_indexed=st.booleans()),
    ),
    st.builds(lambda r: ("DeleteDocument", r), st.builds(ingest_pb.DeleteDocumentRequest, document_id=_text)),
    st.builds(
        lambda r: ("SubmitFeedback", r),
        st.builds(
            feedback_pb.SubmitFeedbackRequest,
            correlation_id=_text,
            verdict=st.integers(-2, 4),
            rating=st.integers(0, 2**32 - 1) | st.integers(0, 6),
            correction=_text,
            comment=_text | st.text(min_size=8000, max_size=8100),
        ),
    ),
)
_calls = st.builds(
    lambda rpc_request, timeout_s, key: Call(rpc_request[0], rpc_request[1], timeout_s, key),
    _requests,
    st.sampled_from([0.01, 0.05, 0.2, 1.0, 4.0, 4.0, 4.0]),
    st.none()
    | st.none()
    | st.none()
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30),
)


def fuzzed_calls(count: int) -> list[Call]:
    return fuzz.draw(_calls, count, 2024)


async def _invoke(channel: grpc.aio.Channel, call: Call, key: str) -> grpc.StatusCode:
    metadata = () if call.key == "" else (("x-api-key", key if call.key is None else call.key),)
    stubs: dict[str, Any] = {
        "Query": query_grpc.QueryServiceStub(channel).Query,
        "QueryStream": query_grpc.QueryServiceStub(channel).QueryStream,
        "Ingest": ingest_grpc.IngestServiceStub(channel).Ingest,
        "DeleteDocument": ingest_grpc.IngestServiceStub(channel).DeleteDocument,
        "SubmitFeedback": feedback_grpc.FeedbackServiceStub(channel).SubmitFeedback,
    }
    try:
        if call.rpc == "QueryStream":
            async for _ in stubs[call.rpc](call.request, metadata=metadata, timeout=call.timeout_s):
                pass
        else:
            await stubs[call.rpc](call.request, metadata=metadata, timeout=call.timeout_s)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_fuzzed_grpc_requests_end_with_documented_statuses(platform: Platform) -> None:
    calls = fuzzed_calls(GRPC_EXAMPLES)
    assert len(calls) >= GRPC_EXAMPLES * 0.9
    gate = asyncio.Semaphore(16)
    outcomes: list[tuple[Call, grpc.StatusCode, float]] = []

    async def run(call: Call) -> None:
        async with gate:
            started = time.monotonic()
            code = await _invoke(channel, call, platform.key)
            outcomes.append((call, code, time.monotonic() - started))

    started = time.monotonic()
    async with platform.channel() as channel:
        await asyncio.gather(*(run(call) for call in calls))
    codes = Counter((call.rpc, code.name) for call, code, _ in outcomes)
    print(f"{len(calls)} fuzzed calls in {time.monotonic() - started:.1f}s: {dict(codes)}")
    bad = [
        f"{call.rpc} -> {code.name} after {took:.2f}s (timeout {call.timeout_s}): {str(call.request)[:200]!r}"
        for call, code, took in outcomes
        if code not in DOCUMENTED or took > call.timeout_s + 1.0
    ]
    assert not bad, f"{len(bad)} calls ended badly, e.g.:\n" + "\n".join(bad[:20])
    await assert_alive_and_serving(platform)


# ------------------------------------------------------------------ a reply topic that cannot exist


async def test_invalid_reply_topic_is_dead_lettered_promptly(platform: Platform) -> None:
    """A request naming a reply topic Kafka refuses ("not a topic!") is dead-lettered at once, and the
    request behind it on the same partition is still answered in time (today: the embedder waits
    out aiokafka's 40 s metadata timeout on the refused topic, then dead-letters the whole batch)."""
    bootstrap = platform.bootstrap
    reply_topic = unique_topic("poison-answers")
    await create_topics(bootstrap, reply_topic, partitions=1)
    correlation_id = str(uuid.uuid4())  # both requests on one partition, the bad one first
    bad = QueryRequested(
        meta=new_meta(tenant_id="nobody", producer="upstream", correlation_id=correlation_id),
        question="Who answers this?",
        reply_topic="not a topic!",
    )
    good = QueryRequested(
        meta=new_meta(tenant_id=TENANT, producer="upstream", correlation_id=correlation_id),
        question="How does Kafka store a topic?",
        reply_topic=reply_topic,
    )
    dlq_start = await end_offsets(bootstrap, DEAD_LETTER.name)
    started = time.monotonic()
    await produce_events(bootstrap, QUERY_REQUESTED.name, [bad, good])
    answers = await read_all(bootstrap, reply_topic, expected=1, timeout_s=20)
    answered_s = time.monotonic() - started
    dead = await read_dead_letters(bootstrap, dlq_start, set(), timeout_s=3, marker=None)
    bad_letters = [h for h in dead.values() if h.get(HEADER_EVENT_ID) == bad.meta.event_id]
    good_letters = [h for h in dead.values() if h.get(HEADER_EVENT_ID) == good.meta.event_id]
    assert bad_letters and bad_letters[0][DLQ_REASON], f"bad request not dead-lettered in {answered_s:.0f}s"
    assert not good_letters, f"the valid request was dead-lettered too: {good_letters[0][DLQ_REASON]}"
    embedder_log = platform.procs["embedder"].log_tail(5)
    assert answers, f"valid request behind the bad one not answered within 20 s:\n{embedder_log}"
    await assert_alive_and_serving(platform)
