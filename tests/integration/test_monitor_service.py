"""The monitor as a separate process on the real Kafka with its embedded ClickHouse (chdb): query
outcomes and feedback land once per request, replays add nothing, an ungrounded answer scores low and
raises a QualityAlert, and a ClickHouse outage leaves offsets uncommitted until it is back."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc
from llmops.query.v1.events_pb2 import QueryAnswered, QueryFailed
from llmops.query.v1.query_pb2 import Citation, FailureReason, RetrievedChunk, StageTiming, TokenUsage
from llmops.telemetry.v1.events_pb2 import QualityAlert
from prometheus_client.parser import text_string_to_metric_families

from shared.events import new_meta
from shared.topics import FEEDBACK_RECORDED, QUALITY_ALERTS, QUERY_ANSWERED, QUERY_FAILED
from tests.support.kafka_tools import committed_lag, decode_records, produce_events, read_all
from tests.support.processes import ServiceProcess, hold_chdb

pytestmark = [pytest.mark.integration]

T = TypeVar("T")
STUB: Any = pb_grpc.MonitorServiceStub  # grpcio-tools writes no types for *_pb2_grpc

CONTEXT = "Kafka stores every topic as partitions of an ordered log. Consumers track their offsets."
STAGES = {"embed": 3.0, "retrieve": 12.0, "queue": 1.5, "first_token": 20.0, "generate": 60.0}


def answered(
    tenant: str, answer: str = "Kafka stores every topic as partitions of an ordered log [1]."
) -> QueryAnswered:
    return QueryAnswered(
        meta=new_meta(tenant_id=tenant, producer="generator"),
        question="How does Kafka store a topic?",
        answer=answer,
        citations=[Citation(marker=1, chunk_id="k1", document_id="kafka.md")],
        context=[RetrievedChunk(chunk_id="k1", document_id="kafka.md", text=CONTEXT, score=0.93)],
        usage=TokenUsage(prompt_tokens=90, completion_tokens=12),
        model_name="tiny_llm",
        model_version="1",
        prompt_template_id="grounded_qa",
        prompt_template_version="v2",
        timings=[StageTiming(stage=s, duration_ms=ms) for s, ms in STAGES.items()],
    )


def failed(tenant: str) -> QueryFailed:
    return QueryFailed(
        meta=new_meta(tenant_id=tenant, producer="retriever"),
        reason=FailureReason.FAILURE_REASON_UNAVAILABLE,
        detail="Weaviate unavailable",
        failed_stage="retriever",
    )


def failed_in_generation(tenant: str, version: str) -> QueryFailed:
    """A failure after the generator's routing chose tiny_llm `version`."""
    return QueryFailed(
        meta=new_meta(tenant_id=tenant, producer="generator"),
        reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
        detail="generation on tiny_llm unavailable after retries",
        failed_stage="generator",
        model_name="tiny_llm",
        model_version=version,
    )


def monitor_process(
    kafka: str, workdir: Path, name: str, chdb: Path, group: str, *, fast_path: bool = False
) -> ServiceProcess:
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_MONITOR_GRPC_PORT": "0",
        "LLMOPS_MONITOR_METRICS_PORT": "0",
        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(chdb),
        "LLMOPS_MONITOR_CONSUMER_GROUP": group,
        "LLMOPS_MONITOR_QUALITY_MIN_SAMPLES": "3",
        "LLMOPS_MONITOR_RECONNECT_INTERVAL_S": "0.5",
        "LLMOPS_MONITOR_REDACTION_TENANTS": '{"mon-hashed": "hash"}',
        # The fast path (services/monitor/native.py) takes batches of answers from this size: 1 sends
        # every batch of answers through it, the default leaves these small batches to the per-event path.
        "LLMOPS_MONITOR_FAST_PATH_MIN_RECORDS": "1" if fast_path else "2000",
    }
    return ServiceProcess(name, ["-m", "services.monitor"], env, workdir, env_prefix="LLMOPS_MONITOR_")


@pytest.fixture(scope="module", params=["per-event", "fast-path"])
def variant(request: pytest.FixtureRequest) -> str:
    """How the monitor stores answers: event by event in Python, or through the ClickHouse engine's
    fast path (services/monitor/native.py). The module's tests run once with each."""
    return str(request.param)


@pytest.fixture(scope="module")
def tenant(variant: str) -> str:
    return f"mon-{variant}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def monitor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("monitor")


@pytest.fixture(scope="module")
def monitor(kafka: str, monitor_dir: Path, variant: str) -> Iterator[ServiceProcess]:
    proc = monitor_process(
        kafka,
        monitor_dir,
        f"monitor-{variant}",
        monitor_dir / f"chdb-{variant}",
        f"test-monitor-{uuid.uuid4().hex[:6]}",
        fast_path=variant == "fast-path",
    )
    try:
        yield proc.start(timeout_s=120)
    finally:
        proc.kill()


def window() -> pb.TimeWindow:
    w = pb.TimeWindow()
    w.start.FromSeconds(int(time.time()) - 3600)
    w.end.FromSeconds(int(time.time()) + 600)
    return w


async def call(target: str, method: str, request: Any) -> Any:
    async with grpc.aio.insecure_channel(target) as channel:
        return await getattr(STUB(channel), method)(request, timeout=10)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    timeout_s: float = 60.0,
    what: str = "",
    log: ServiceProcess | None = None,
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            tail = log.log_tail() if log is not None else ""
            assert done(value), f"timed out waiting for {what}: last value {value}\n{tail}"
            return value
        await asyncio.sleep(0.5)


async def list_requests(target: str, tenant: str) -> list[pb.RequestRecord]:
    response = await call(
        target, "ListRequests", pb.ListRequestsRequest(tenant_id=tenant, window=window(), limit=1000)
    )
    return list(response.requests)


def assert_traffic(traffic: pb.GetTrafficResponse) -> None:
    """GetTraffic of 5 answers by tiny_llm v1, one retriever failure and one generator failure on v1."""
    assert (traffic.requests, traffic.failed) == (7, 2)
    assert traffic.error_rate == pytest.approx(2 / 7)
    assert (traffic.prompt_tokens, traffic.completion_tokens) == (450, 60)
    assert dict(traffic.failures_by_reason) == {"UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 1}
    # The generator's failure is attributed to tiny_llm v1; the retriever's to no version.
    [model] = traffic.models
    assert (model.model_name, model.model_version, model.requests, model.failed) == ("tiny_llm", "1", 6, 1)
    assert model.error_rate == pytest.approx(1 / 6)


def answer_batches(proc: ServiceProcess) -> dict[str, float]:
    """llmops_monitor_answer_batches_total by path, from the process's Prometheus endpoint."""
    with urllib.request.urlopen(proc.endpoints["metrics"], timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["path"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "llmops_monitor_answer_batches"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def assert_answers_took_the_variants_path(proc: ServiceProcess, variant: str) -> None:
    """Every batch of answers took the way this run of the module is about, none was refused."""
    batches = answer_batches(proc)
    taken, other = ("fast_path", "small") if variant == "fast-path" else ("small", "fast_path")
    assert batches.get(taken, 0) >= 2 and batches.get(other, 0) == 0, batches
    assert batches.get("refused", 0) == 0, batches


async def test_every_request_is_recorded_once_with_stages_and_tenant(
    kafka: str, monitor: ServiceProcess, tenant: str, variant: str
) -> None:
    answers = [answered(tenant) for _ in range(5)]
    failures = [failed(tenant), failed_in_generation(tenant, "1")]
    feedback = [
        FeedbackRecorded(
            meta=new_meta(tenant_id=tenant, producer="gateway", correlation_id=a.meta.correlation_id),
            verdict=Verdict.VERDICT_UP if i else Verdict.VERDICT_DOWN,
            rating=4,
        )
        for i, a in enumerate(answers[:3])
    ]
    other_tenant = answered(f"{tenant}-other")
    await produce_events(kafka, QUERY_ANSWERED.name, [*answers, other_tenant])
    await produce_events(kafka, QUERY_FAILED.name, failures)
    await produce_events(kafka, FEEDBACK_RECORDED.name, feedback)

    target = monitor.grpc_target
    records = await eventually(
        lambda: list_requests(target, tenant),
        lambda r: len(r) >= 7,
        what="7 requests",
        log=monitor,
    )
    by_id = {r.correlation_id: r for r in records}
    assert len(records) == len(by_id) == 7
    assert set(by_id) == {e.meta.correlation_id for e in answers} | {e.meta.correlation_id for e in failures}
    for event in answers:
        record = by_id[event.meta.correlation_id]
        assert record.tenant_id == tenant
        assert record.event_id == event.meta.event_id
        assert record.status == pb.REQUEST_STATUS_ANSWERED
        assert dict(record.stage_ms) == STAGES
        assert record.total_ms == pytest.approx(76.5)
        assert (record.prompt_tokens, record.completion_tokens) == (90, 12)
        assert (record.model_name, record.model_version, record.prompt_template_version) == (
            "tiny_llm",
            "1",
            "v2",
        )
        assert list(record.chunk_ids) == ["k1"]
        assert record.groundedness == pytest.approx(1.0)
        assert record.question == "How does Kafka store a topic?"
    for failure in failures:
        record = by_id[failure.meta.correlation_id]
        assert (record.status, record.error_reason, record.failed_stage) == (
            pb.REQUEST_STATUS_FAILED,
            FailureReason.Name(failure.reason).removeprefix("FAILURE_REASON_"),
            failure.failed_stage,
        )
        assert (record.model_name, record.model_version) == (failure.model_name, failure.model_version)
        assert not record.HasField("groundedness")

    latency = await call(target, "GetLatency", pb.GetLatencyRequest(tenant_id=tenant, window=window()))
    stages = {s.stage: s for s in latency.stages}
    assert set(stages) == {*STAGES, "total"}
    assert stages["generate"].count == 5
    assert stages["generate"].p50_ms == pytest.approx(60.0)
    assert stages["total"].p99_ms == pytest.approx(76.5)

    assert_traffic(await call(target, "GetTraffic", pb.GetTrafficRequest(tenant_id=tenant, window=window())))

    summary = await eventually(
        lambda: call(
            target, "GetFeedbackSummary", pb.GetFeedbackSummaryRequest(tenant_id=tenant, window=window())
        ),
        lambda s: s.total.total >= 3,
        what="feedback",
    )
    assert (summary.total.up, summary.total.down, summary.total.mean_rating) == (2, 1, pytest.approx(4.0))
    [model] = summary.models
    assert (model.model_version, model.counts.total) == ("1", 3)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(target, "GetLatency", pb.GetLatencyRequest(window=window()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Re-producing the same events (same event ids) adds nothing.
    await produce_events(kafka, QUERY_ANSWERED.name, answers)
    await produce_events(kafka, QUERY_FAILED.name, failures)
    await asyncio.sleep(3)
    assert len(await list_requests(target, tenant)) == 7

    assert_answers_took_the_variants_path(monitor, variant)


async def test_replaying_the_topics_into_a_restarted_monitor_adds_no_rows(
    kafka: str, monitor: ServiceProcess, monitor_dir: Path, tenant: str, variant: str
) -> None:
    await eventually(
        lambda: list_requests(monitor.grpc_target, tenant), lambda r: len(r) == 7, what="7 requests"
    )
    assert monitor.terminate() == 0
    # A new consumer group reads every topic from the start again, with an empty idempotency memory:
    # only ClickHouse's own deduplication stands between the replay and duplicate rows.
    group = f"test-monitor-replay-{uuid.uuid4().hex[:6]}"
    replay = monitor_process(
        kafka,
        monitor_dir,
        f"monitor-replay-{variant}",
        monitor_dir / f"chdb-{variant}",
        group,
        fast_path=variant == "fast-path",
    )
    try:
        replay.start(timeout_s=120)
        await eventually(
            lambda: committed_lag(kafka, QUERY_ANSWERED.name, group),
            lambda lag: lag == 0,
            what="replay of answers",
        )
        await eventually(
            lambda: committed_lag(kafka, QUERY_FAILED.name, group),
            lambda lag: lag == 0,
            what="replay of failures",
        )
        records = await list_requests(replay.grpc_target, tenant)
        assert len(records) == len({r.correlation_id for r in records}) == 7
        summary = await call(
            replay.grpc_target,
            "GetFeedbackSummary",
            pb.GetFeedbackSummaryRequest(tenant_id=tenant, window=window()),
        )
        assert summary.total.total == 3
    finally:
        replay.kill()
        monitor.start(timeout_s=120)  # back for the next tests (same group: nothing new to read)


async def test_ungrounded_answers_score_low_and_raise_a_quality_alert(
    kafka: str, monitor: ServiceProcess
) -> None:
    tenant = f"mon-ungrounded-{uuid.uuid4().hex[:6]}"
    nonsense = "Sourdough bread rises slowly because wild yeast ferments the dough overnight."
    events = [answered(tenant, answer=nonsense) for _ in range(3)]
    await produce_events(kafka, QUERY_ANSWERED.name, events)

    worst = await eventually(
        lambda: call(
            monitor.grpc_target,
            "ListWorstGrounded",
            pb.ListWorstGroundedRequest(tenant_id=tenant, window=window()),
        ),
        lambda r: len(r.requests) == 3,
        what="3 scored answers",
        log=monitor,
    )
    assert all(r.groundedness == 0.0 for r in worst.requests)
    trend = await call(
        monitor.grpc_target,
        "GetGroundednessTrend",
        pb.GetGroundednessTrendRequest(tenant_id=tenant, window=window()),
    )
    assert sum(b.scored for b in trend.buckets) == 3
    assert max(b.mean for b in trend.buckets) == 0.0

    alerts: list[QualityAlert] = []
    deadline = time.monotonic() + 30
    while not alerts and time.monotonic() < deadline:
        records = await read_all(kafka, QUALITY_ALERTS.name, expected=10**6, timeout_s=2)
        for record, alert in decode_records(records, QualityAlert):
            if alert.meta.tenant_id == tenant:
                alerts.append(alert)
                assert record.key == tenant.encode()
    assert [a.signal for a in alerts] == ["groundedness"], monitor.log_tail()
    assert alerts[0].observed == 0.0
    assert alerts[0].threshold == pytest.approx(0.5)
    assert alerts[0].meta.producer == "monitor"


async def test_redaction_policy_hashes_the_tenants_text(kafka: str, monitor: ServiceProcess) -> None:
    event = answered("mon-hashed")
    await produce_events(kafka, QUERY_ANSWERED.name, [event])
    records = await eventually(
        lambda: list_requests(monitor.grpc_target, "mon-hashed"),
        lambda r: any(x.correlation_id == event.meta.correlation_id for x in r),
        what="hashed request",
    )
    [record] = [r for r in records if r.correlation_id == event.meta.correlation_id]
    assert record.redaction == "hash"
    assert record.question.startswith("sha256:") and "Kafka" not in record.answer
    assert record.groundedness == pytest.approx(1.0)  # judged before redaction


async def test_clickhouse_unavailable_keeps_offsets_until_it_is_back(
    kafka: str, tmp_path: Path, variant: str
) -> None:
    chdb = tmp_path / "held-chdb"
    # Another process holds the chdb path (the engine refuses a second owner): the monitor cannot write.
    holder = await hold_chdb(chdb)
    group = f"test-monitor-outage-{uuid.uuid4().hex[:6]}"
    tenant = f"mon-outage-{uuid.uuid4().hex[:6]}"
    proc = monitor_process(kafka, tmp_path, "monitor-outage", chdb, group, fast_path=variant == "fast-path")
    try:
        proc.start(timeout_s=120)
        events = [answered(tenant) for _ in range(4)]
        await produce_events(kafka, QUERY_ANSWERED.name, events)
        await asyncio.sleep(5)  # several redelivery rounds
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await list_requests(proc.grpc_target, tenant)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await committed_lag(kafka, QUERY_ANSWERED.name, group) > 0, proc.log_tail()
        assert "transient failure, batch will be redelivered" in proc.log_path.read_text()

        holder.kill()
        await holder.wait()
        records = await eventually(
            lambda: list_requests_or_none(proc.grpc_target, tenant),
            lambda r: r is not None and len(r) == 4,
            timeout_s=90,
            what="catch-up after the outage",
            log=proc,
        )
        assert records is not None
        assert {r.correlation_id for r in records} == {e.meta.correlation_id for e in events}
        await eventually(
            lambda: committed_lag(kafka, QUERY_ANSWERED.name, group),
            lambda lag: lag == 0,
            what="commit after catch-up",
        )
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        proc.kill()


async def list_requests_or_none(target: str, tenant: str) -> list[pb.RequestRecord] | None:
    try:
        return await list_requests(target, tenant)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None
        raise
