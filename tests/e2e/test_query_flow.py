"""The query path end to end (issue: query API): gateway, embedder, retriever, generator and monitor
as separate processes on the real Kafka, Weaviate, Triton and chdb. Questions come in over gRPC
(unary and streaming) and as Kafka request events; answers cite the right document; bad calls get
the right status and leave nothing pending; a generator killed mid-answer never makes a call hang
or answer twice; the monitor records each request once."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.ingest.v1.document_pb2 import Document
from llmops.monitor.v1 import monitor_service_pb2 as monitor_pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as monitor_grpc
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from services.gateway.auth import issue_key
from shared.events import new_meta
from shared.grpc_errors import error_info
from shared.infra.stack import Stack
from shared.topics import CONTEXT_RETRIEVED, FEEDBACK_RECORDED, QUERY_FAILED, QUERY_REQUESTED
from tests.support.kafka_tools import (
    committed_lag,
    create_topics,
    decode_records,
    produce_events,
    read_all,
    unique_topic,
)
from tests.support.processes import REPO_ROOT, ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

TENANT = "flow"
DOCS = {
    "kafka.md": "Kafka stores every topic as partitions of an ordered log. Consumers track offsets.",
    "bread.md": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "raft.md": (
        "Raft elects one leader per term that appends client commands to its log, replicates every entry "
        "to a majority of followers, commits the entry once a quorum has stored it, and steps down as soon "
        "as it sees a higher term from any other server in the cluster during an election."
    ),
}
TOKEN_DELAY_MS = 40  # tiny_llm's pace: a one-sentence answer takes about half a second, long ones 2 s
INFLIGHT_LIMIT = 2


@dataclass
class Platform:
    procs: dict[str, ServiceProcess]
    keys: dict[str, str]

    def md(self, tenant: str = TENANT) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.keys[tenant]),)

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.procs["gateway"].grpc_target)

    def gateway_metric(self, name: str) -> float:
        with urllib.request.urlopen(self.procs["gateway"].endpoints["metrics"], timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"gateway exports no metric {name}")


@pytest.fixture(scope="module")
def platform(
    kafka: str, weaviate: str, triton: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("flow")
    keys_file = workdir / "api-keys.json"
    keys = {tenant: issue_key(keys_file, tenant) for tenant in (TENANT, "ghost")}
    names = ("embedder", "retriever", "generator", "gateway", "monitor")
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkFlow",
        "LLMOPS_TRITON_GRPC_URL": triton,
        "LLMOPS_TENANTS_KNOWN": TENANT,  # "ghost" has a key but is not served
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        "LLMOPS_GATEWAY_MAX_INFLIGHT_PER_TENANT": str(INFLIGHT_LIMIT),
        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(workdir / "chdb"),
        "LLMOPS_GENERATOR_SAMPLING_PARAMETERS": f'{{"token_delay_ms": {TOKEN_DELAY_MS}}}',
        **{f"LLMOPS_{name.upper()}_CONSUMER_GROUP": f"flow-{name}" for name in names},
    }
    with platform_services(names, env, workdir) as procs:
        platform = Platform(procs, keys)
        asyncio.run(_ingest_corpus(platform))
        yield platform


async def _ingest_corpus(platform: Platform) -> None:
    async with platform.channel() as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        for doc_id, text in DOCS.items():
            document = Document(document_id=doc_id, source_uri=f"file:///{doc_id}", content=text.encode())
            await stub.Ingest(
                ingest_pb.IngestRequest(document=document, wait_indexed=True),
                metadata=platform.md(),
                timeout=120,
            )


async def test_unary_query_answers_with_a_citation_of_the_right_document(platform: Platform) -> None:
    async with platform.channel() as channel:
        call = query_grpc.QueryServiceStub(channel).Query(
            query_pb.QueryRequest(question="How does Kafka store a topic?"),
            metadata=platform.md(),
            timeout=30,
        )
        response: query_pb.QueryResponse = await call
        initial = await call.initial_metadata()
    assert response.answer.startswith("Kafka stores every topic as partitions of an ordered log.")
    assert [c.document_id for c in response.citations] == ["kafka.md"]
    assert response.correlation_id and initial["x-correlation-id"] == response.correlation_id
    assert response.model_name == "tiny_llm" and response.usage.completion_tokens > 5
    stages = {t.stage: t.duration_ms for t in response.timings}
    assert {"embed", "retrieve", "queue", "first_token", "generate"} <= stages.keys()
    assert all(v >= 0 for v in stages.values())


async def test_streamed_query_sends_tokens_as_they_are_generated_then_the_final_answer(
    platform: Platform,
) -> None:
    arrivals: list[tuple[float, query_pb.QueryStreamResponse]] = []
    async with platform.channel() as channel:
        stream = query_grpc.QueryServiceStub(channel).QueryStream(
            query_pb.QueryStreamRequest(question="Why does sourdough bread rise slowly?"),
            metadata=platform.md(),
            timeout=30,
        )
        async for message in stream:
            arrivals.append((time.monotonic(), message))
    tokens = [(t, m.token) for t, m in arrivals if m.WhichOneof("payload") == "token"]
    final = arrivals[-1][1]
    assert final.WhichOneof("payload") == "final" and len(arrivals) == len(tokens) + 1
    assert len(tokens) >= 8
    # Incremental: the pieces spread over the generation time instead of arriving in one burst.
    spread_s = tokens[-1][0] - tokens[0][0]
    assert spread_s > (len(tokens) - 1) * TOKEN_DELAY_MS / 1000 * 0.5
    assert " ".join(text.strip() for _, text in tokens) == final.final.answer
    assert final.final.answer.startswith("Sourdough bread rises slowly")
    assert [c.document_id for c in final.final.citations] == ["bread.md"]


async def test_kafka_request_event_is_answered_on_its_reply_topic(kafka: str, platform: Platform) -> None:
    reply_topic = unique_topic("answers")
    await create_topics(kafka, reply_topic, partitions=1)
    request = QueryRequested(
        meta=new_meta(tenant_id=TENANT, producer="upstream"),
        question="How does Kafka store a topic?",
        reply_topic=reply_topic,
    )
    await produce_events(kafka, QUERY_REQUESTED.name, [request])
    records = await read_all(kafka, reply_topic, expected=1, timeout_s=60)
    assert records, platform.procs["generator"].log_tail()
    answered = QueryAnswered()
    answered.ParseFromString(records[0].value)
    assert answered.meta.correlation_id == request.meta.correlation_id
    assert answered.answer.startswith("Kafka stores every topic as partitions of an ordered log.")
    assert [c.document_id for c in answered.citations] == ["kafka.md"]
    assert answered.citations[0].source_uri == "file:///kafka.md"
    assert [t.stage for t in answered.timings][:2] == ["embed", "retrieve"]


async def _query_error(
    platform: Platform, request: query_pb.QueryRequest, **kwargs: object
) -> grpc.aio.AioRpcError:
    async with platform.channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query_grpc.QueryServiceStub(channel).Query(request, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("metadata", "question", "code", "reason"),
    [
        ((), "What is Kafka?", grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING"),
        (
            (("x-api-key", "llmops_not-a-key"),),
            "What is Kafka?",
            grpc.StatusCode.UNAUTHENTICATED,
            "API_KEY_INVALID",
        ),
        ("ghost", "What is Kafka?", grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_SERVED"),
        (TENANT, "x" * 5000, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUERY"),
        (TENANT, "   ", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUERY"),
    ],
)
async def test_bad_calls_get_the_right_status_with_details(
    platform: Platform, metadata: object, question: str, code: grpc.StatusCode, reason: str
) -> None:
    md = platform.md(metadata) if isinstance(metadata, str) else metadata
    error = await _query_error(platform, query_pb.QueryRequest(question=question), metadata=md, timeout=10)
    assert error.code() is code, error.details()
    info = error_info(error)
    assert info is not None and info.reason == reason


async def test_unknown_prompt_template_fails_with_invalid_argument_from_the_generator(
    platform: Platform,
) -> None:
    request = query_pb.QueryRequest(question="What is Kafka?", prompt_template_id="no_such_template")
    error = await _query_error(platform, request, metadata=platform.md(), timeout=30)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info is not None and info.metadata["failed_stage"] == "generator"
    assert "no_such_template" in (error.details() or "")


async def test_too_short_deadlines_fail_fast_and_leave_nothing_pending(
    kafka: str, platform: Platform
) -> None:
    # Shorter than the gateway's minimum: refused before anything is published.
    error = await _query_error(
        platform, query_pb.QueryRequest(question="What is Kafka?"), metadata=platform.md(), timeout=0.02
    )
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # Long enough to be asked, too short to be answered: the stage holding it drops it with a reason.
    async with platform.channel() as channel:
        call = query_grpc.QueryServiceStub(channel).Query(
            query_pb.QueryRequest(question="How does Raft elect a leader?"),
            metadata=platform.md(),
            timeout=0.5,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        correlation_id = (await call.initial_metadata())["x-correlation-id"]
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    info = error_info(caught.value)
    assert info is not None and info.metadata["correlation_id"] == correlation_id, "the gateway answers first"
    failures: list[QueryFailed] = []
    for _ in range(40):
        failures = []
        records = await read_all(kafka, QUERY_FAILED.name, expected=10**6, timeout_s=1)
        for _, failed in decode_records(records, QueryFailed):
            if failed.meta.correlation_id == correlation_id:
                failures.append(failed)
        if failures:
            break
        await asyncio.sleep(0.25)
    assert [f.reason for f in failures] == [FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED]
    assert platform.gateway_metric("llmops_gateway_queries_inflight") == 0
    for name, topic in (("embedder", QUERY_REQUESTED.name), ("generator", CONTEXT_RETRIEVED.name)):
        assert await committed_lag(kafka, topic, f"flow-{name}") == 0


async def test_more_queries_in_flight_than_the_tenant_limit_get_resource_exhausted(
    platform: Platform,
) -> None:
    async with platform.channel() as channel:
        stub = query_grpc.QueryServiceStub(channel)

        async def ask(question: str) -> query_pb.QueryResponse:
            response: query_pb.QueryResponse = await stub.Query(
                query_pb.QueryRequest(question=question), metadata=platform.md(), timeout=30
            )
            return response

        slow = [asyncio.create_task(ask("How does Raft elect a leader?")) for _ in range(INFLIGHT_LIMIT)]
        for _ in range(100):
            if platform.gateway_metric("llmops_gateway_queries_inflight") >= INFLIGHT_LIMIT:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Query(
                query_pb.QueryRequest(question="What is Kafka?"), metadata=platform.md(), timeout=30
            )
        answers = await asyncio.gather(*slow)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert all(a.citations[0].document_id == "raft.md" for a in answers)


async def test_feedback_is_recorded_for_the_callers_tenant(kafka: str, platform: Platform) -> None:
    async with platform.channel() as channel:
        stub = feedback_grpc.FeedbackServiceStub(channel)
        response = await stub.SubmitFeedback(
            feedback_pb.SubmitFeedbackRequest(
                correlation_id="c-123", verdict=Verdict.VERDICT_DOWN, rating=2, correction="Kafka uses logs."
            ),
            metadata=platform.md(),
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitFeedback(
                feedback_pb.SubmitFeedbackRequest(correlation_id="c-123", rating=7),
                metadata=platform.md(),
                timeout=10,
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    recorded = []
    records = await read_all(kafka, FEEDBACK_RECORDED.name, expected=10**6, timeout_s=2)
    for _, event in decode_records(records, FeedbackRecorded):
        if event.meta.event_id == response.event_id:
            recorded.append(event)
    assert len(recorded) == 1
    assert (recorded[0].meta.tenant_id, recorded[0].meta.correlation_id) == (TENANT, "c-123")
    assert recorded[0].verdict == Verdict.VERDICT_DOWN and recorded[0].correction == "Kafka uses logs."


async def test_generator_killed_mid_answer_completes_once_or_fails_cleanly(platform: Platform) -> None:
    """Kill -9 the generator after the first streamed token, restart it: the call ends within its
    deadline, with one complete answer (each piece streamed once) or UNAVAILABLE / DEADLINE_EXCEEDED."""
    generator = platform.procs["generator"]
    deadline_s = 45.0
    started = time.monotonic()
    tokens: list[str] = []
    finals: list[query_pb.QueryResponse] = []
    error: grpc.aio.AioRpcError | None = None
    async with platform.channel() as channel:
        stream = query_grpc.QueryServiceStub(channel).QueryStream(
            query_pb.QueryStreamRequest(question="How does Raft elect a leader?"),
            metadata=platform.md(),
            timeout=deadline_s,
        )
        try:
            async for message in stream:
                if message.WhichOneof("payload") == "token":
                    tokens.append(message.token)
                    if len(tokens) == 1:
                        generator.kill()
                        await asyncio.to_thread(generator.start, 120)
                else:
                    finals.append(message.final)
        except grpc.aio.AioRpcError as exc:
            error = exc
    elapsed = time.monotonic() - started
    assert elapsed < deadline_s + 5, "the call outlived its deadline"
    if error is None:
        assert len(finals) == 1, "exactly one final answer"
        assert " ".join(t.strip() for t in tokens) == finals[0].answer, "each piece streamed once"
        assert [c.document_id for c in finals[0].citations] == ["raft.md"]
    else:
        assert error.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}, error
        assert not finals
    assert platform.gateway_metric("llmops_gateway_queries_inflight") == 0


async def _llmops(platform: Platform, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "--gateway",
        platform.procs["gateway"].grpc_target,
        *args,
        "--api-key",
        platform.keys[TENANT],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_cli_asks_with_sources_then_records_feedback(kafka: str, platform: Platform) -> None:
    rc, out, err = await _llmops(platform, "ask", "How does Kafka store a topic?")
    assert rc == 0, err
    assert out.startswith("Kafka stores every topic as partitions of an ordered log.")
    assert "Sources:\n  [1] kafka.md  file:///kafka.md" in out
    correlation_id = out.split("request ", 1)[1].split()[0]
    rc, out, err = await _llmops(platform, "feedback", correlation_id, "--up", "--rating", "5")
    assert rc == 0 and out.startswith("feedback recorded"), err
    rc, out, err = await _llmops(platform, "ask", "   ")
    assert rc == 1 and "INVALID_ARGUMENT [INVALID_QUERY]: question is empty" in err


async def test_upstream_producer_in_node_kafkajs_gets_its_answer(kafka: str, platform: Platform) -> None:
    """The async contract from another language: kafkajs + protobufjs (from npm) produce QueryRequested,
    keyed by correlation id, and read QueryAnswered from their own reply topic."""
    node = shutil.which("node")
    assert node, "node is required for the cross-language contract test (it installs buf's npm package too)"
    script = REPO_ROOT / "tests" / "support" / "node" / "upstream.mjs"
    assert (REPO_ROOT / "node_modules" / "kafkajs").is_dir(), "run `make install` (npm install) first"
    reply_topic = unique_topic("node-answers")
    await create_topics(kafka, reply_topic, partitions=1)
    proc = await asyncio.create_subprocess_exec(
        node,
        str(script),
        kafka,
        TENANT,
        "Why does sourdough bread rise slowly?",
        reply_topic,
        "30000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{out.decode()}\n{err.decode()}"
    reply = json.loads(out.decode().strip().splitlines()[-1])
    assert reply["type"] == "QueryAnswered", reply
    assert reply["answer"].startswith("Sourdough bread rises slowly")
    assert [c["documentId"] for c in reply["citations"]] == ["bread.md"]
    assert reply["meta"]["tenantId"] == TENANT and reply["meta"]["producer"] == "generator"


async def test_monitor_records_each_request_once_and_llmops_stats_reports_it(platform: Platform) -> None:
    async with platform.channel() as channel:
        stub = query_grpc.QueryServiceStub(channel)
        answers = [
            await stub.Query(query_pb.QueryRequest(question=q), metadata=platform.md(), timeout=30)
            for q in ("How does Kafka store a topic?", "Why does sourdough bread rise slowly?")
        ]
    async with grpc.aio.insecure_channel(platform.procs["monitor"].grpc_target) as channel:
        monitor = monitor_grpc.MonitorServiceStub(channel)
        for answer in answers:
            records: list[monitor_pb.RequestRecord] = []
            for _ in range(60):
                response = await monitor.ListRequests(
                    monitor_pb.ListRequestsRequest(tenant_id=TENANT, correlation_id=answer.correlation_id),
                    timeout=10,
                )
                records = list(response.requests)
                if records:
                    break
                await asyncio.sleep(0.5)
            assert len(records) == 1, platform.procs["monitor"].log_tail()
            record = records[0]
            assert record.tenant_id == TENANT and record.status == monitor_pb.REQUEST_STATUS_ANSWERED
            assert record.answer == answer.answer and record.model_name == "tiny_llm"
            assert {"embed", "retrieve", "generate", "first_token"} <= set(record.stage_ms)
            assert record.chunk_ids and record.groundedness > 0.9  # tiny_llm copies a passage sentence
    rc, out, err = await _llmops_stats(platform)
    assert rc == 0, err
    requests = int(out.split("requests ", 1)[1].split()[0])
    assert requests >= 2
    assert "embed" in out and "generate" in out and "feedback:" in out


async def _llmops_stats(platform: Platform) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "stats",
        "--tenant",
        TENANT,
        "--monitor",
        platform.procs["monitor"].grpc_target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()
