"""Services and dependencies failing under load (issue: reliability). The gateway, embedder,
retriever, generator and monitor run as processes (SQLite idempotency stores, as `make run` sets them)
on the session's Kafka with a Weaviate and a Triton of their own, while callers keep asking over gRPC
(unary and streaming):

- each service in turn gets SIGKILL and is restarted: every call ends within its deadline, answered
  or failed with a status and a reason; a caller never gets an answer twice; every request that
  reached the bus gets an outcome and is recorded by the monitor once;
- Triton, Weaviate and ClickHouse are each unavailable for about 30 s: calls whose deadline outlasts
  the outage are retried up to their deadline and answered after recovery (generation on Triton,
  retrieval on Weaviate), calls past their deadline fail with DEADLINE_EXCEEDED and a reason, no
  service crashes, and the monitor afterwards holds every request.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.ingest.v1.document_pb2 import Document
from llmops.monitor.v1 import monitor_service_pb2 as monitor_pb

from services.gateway.auth import issue_key
from shared.infra.stack import Stack
from shared.topics import QUERY_ANSWERED, QUERY_FAILED
from tests.support.kafka_tools import wait_for
from tests.support.load import (
    FAULT_CODES,
    FAULT_STACK_PORT_BASE,
    CallOutcome,
    QueryLoad,
    Tail,
    monitor_requests,
    requested_ids,
    summarize,
)
from tests.support.processes import ServiceProcess, hold_chdb, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

SERVICES = ("embedder", "retriever", "generator", "gateway", "monitor")
DEPENDENCIES = ("triton", "weaviate", "clickhouse")
DOCUMENT = "Kafka stores every topic as partitions of an ordered log. Consumers track their offsets."
ANSWER = "Kafka stores every topic as partitions of an ordered log."
QUESTIONS = (
    "How does Kafka store a topic?",
    "Where does Kafka keep a topic?",
    "What is a Kafka topic made of?",
)
OUTAGE_S = 30.0
DEADLINE_S = 20.0  # callers during service kills
LONG_DEADLINE_S = 75.0  # outlasts a dependency outage
SHORT_DEADLINE_S = 4.0  # does not
SLACK_S = 2.0  # a call ends within its deadline plus this


def tenant_of(phase: str) -> str:
    return f"ff-{phase}"


@dataclass
class Platform:
    procs: dict[str, ServiceProcess]
    keys: dict[str, str]
    stack: Stack
    workdir: Path
    figures: dict[str, dict[str, object]] = field(default_factory=dict)

    def gateway(self) -> str:
        return self.procs["gateway"].grpc_target

    def load(self, phase: str, *, deadline_s: float, concurrency: int, stream_every: int = 2) -> QueryLoad:
        return QueryLoad(
            target=self.gateway,
            api_key=self.keys[tenant_of(phase)],
            questions=QUESTIONS,
            concurrency=concurrency,
            deadline_s=deadline_s,
            stream_every=stream_every,
        ).start()

    def alive(self) -> dict[str, bool]:
        return {n: p.proc is not None and p.proc.poll() is None for n, p in self.procs.items()}


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[Stack]:
    state = Path(tempfile.mkdtemp(prefix="llmops-faults-"))
    stack = Stack(
        state, port_base=FAULT_STACK_PORT_BASE, components=("weaviate", "triton"), triton_models=["tiny_llm"]
    )
    try:
        stack.weaviate.start()
        stack.triton.start()
        yield stack
    finally:
        stack.triton.stop()
        stack.weaviate.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(kafka: str, fault_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    workdir = tmp_path_factory.mktemp("faults")
    keys_file = workdir / "api-keys.json"
    tenants = [tenant_of(p) for p in (*SERVICES, *DEPENDENCIES)]
    keys = {tenant: issue_key(keys_file, tenant) for tenant in tenants}
    env = {
        **fault_stack.endpoints(),
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkFaults",
        "LLMOPS_TENANTS_KNOWN": ",".join(tenants),
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        # Callers may ask for deadlines that outlast an outage (the default cap is 30 s).
        "LLMOPS_GATEWAY_DEFAULT_QUERY_TIMEOUT_S": str(LONG_DEADLINE_S),
        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(workdir / "chdb"),
        "LLMOPS_MONITOR_RECONNECT_INTERVAL_S": "0.5",
        # A decode pace, so that kills land in the middle of generations.
        "LLMOPS_GENERATOR_SAMPLING_PARAMETERS": '{"token_delay_ms": 10}',
        **{f"LLMOPS_{n.upper()}_CONSUMER_GROUP": f"faults-{n}" for n in SERVICES},
        # As `make run`: processed event ids survive a restart.
        **{f"LLMOPS_{n.upper()}_IDEMPOTENCY_DB": str(workdir / f"{n}.processed.db") for n in SERVICES},
    }
    with platform_services(SERVICES, env, workdir) as procs:
        platform = Platform(procs, keys, fault_stack, workdir)
        asyncio.run(_ingest(platform, tenants))
        yield platform
        print("fault figures:")
        for phase, figures in platform.figures.items():
            print(f"  {phase}: {figures}")


async def _ingest(platform: Platform, tenants: Sequence[str]) -> None:
    async with grpc.aio.insecure_channel(platform.gateway()) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        for tenant in tenants:
            await stub.Ingest(
                ingest_pb.IngestRequest(
                    document=Document(document_id="kafka.md", content=DOCUMENT.encode()), wait_indexed=True
                ),
                metadata=(("x-api-key", platform.keys[tenant]),),
                timeout=120,
            )


def check_calls(
    outcomes: Sequence[CallOutcome],
    *,
    reasonless_window: tuple[float, float] | None = None,
) -> None:
    """Every call ended in time, answered or failed with a fault status; failures carry a reason (except
    transport failures while the gateway itself was down); nobody got an answer twice."""
    assert outcomes
    for o in outcomes:
        assert o.ended - o.started <= o.deadline_s + SLACK_S, o
        assert o.code in FAULT_CODES, o
        if o.ok:
            assert o.finals == 1 and o.answer.startswith(ANSWER), o
            if o.stream:
                assert o.streamed == o.answer, o  # each piece once, in order
        elif not o.reason:
            # The caller's own timer can beat the gateway's DEADLINE_EXCEEDED (sent 50 ms earlier) on a
            # starved CPU; the status is still the right one.
            own_timer = o.code == "DEADLINE_EXCEEDED" and o.ended - o.started >= o.deadline_s - 0.1
            down = reasonless_window is not None and reasonless_window[0] <= o.ended <= reasonless_window[1]
            assert own_timer or down, o


async def check_requests_recorded(
    kafka: str, platform: Platform, phase: str, outcomes: Sequence[CallOutcome], timeout_s: float = 120
) -> dict[str, int]:
    """Every request of the phase that reached the bus has an outcome on the bus and is recorded once
    by the monitor (answered calls as answered). Returns the bus figures."""
    tenant = tenant_of(phase)
    published = await requested_ids(kafka, tenant)  # what the gateway published for the tenant
    answered_ids = {o.correlation_id for o in outcomes if o.ok}
    assert answered_ids <= published
    records: list[monitor_pb.RequestRecord] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            records = await monitor_requests(platform.procs["monitor"].grpc_target, tenant)
        except grpc.aio.AioRpcError:
            records = []
        if published <= {r.correlation_id for r in records}:
            break
        await asyncio.sleep(1)
    recorded = Counter(r.correlation_id for r in records)
    missing = published - recorded.keys()
    assert not missing, (len(missing), sorted(missing)[:3], platform.procs["monitor"].log_tail(20))
    assert all(n == 1 for n in recorded.values())
    statuses = {r.correlation_id: r.status for r in records}
    assert all(statuses[c] == monitor_pb.REQUEST_STATUS_ANSWERED for c in answered_ids)
    async with Tail(kafka, [QUERY_ANSWERED.name, QUERY_FAILED.name]) as replies:
        await replies.drain()
    outcomes_on_bus = replies.keys()
    return {
        "published": len(published),
        "bus_outcomes_missing": len([c for c in published if outcomes_on_bus[c] == 0]),
        "bus_duplicate_outcomes": len([c for c in published if outcomes_on_bus[c] > 1]),
    }


def phase_figures(outcomes: Sequence[CallOutcome], **extra: object) -> dict[str, object]:
    return {"calls": len(outcomes), "outcomes": summarize(outcomes), **extra}


@pytest.mark.parametrize("name", SERVICES)
async def test_service_killed_under_load_loses_no_request(kafka: str, platform: Platform, name: str) -> None:
    load = platform.load(name, deadline_s=DEADLINE_S, concurrency=6)
    await wait_for(lambda: sum(o.ok for o in load.outcomes) >= 10, 60)
    proc = platform.procs[name]
    killed_at = time.monotonic()
    proc.kill()
    await asyncio.to_thread(proc.start, 120)
    restarted_at = time.monotonic()
    # Load goes on until a call asked after the kill has been answered.
    recovered = await wait_for(lambda: any(o.ok and o.started > killed_at for o in load.outcomes), 90)
    outcomes = await load.stop()
    assert recovered, (summarize(outcomes), proc.log_tail(30))
    check_calls(outcomes, reasonless_window=(killed_at, restarted_at + 1) if name == "gateway" else None)
    assert all(platform.alive().values()), platform.alive()
    bus = await check_requests_recorded(kafka, platform, name, outcomes)
    first_ok = min(o.ended for o in outcomes if o.ok and o.started > killed_at)
    platform.figures[f"kill -9 {name}"] = phase_figures(
        outcomes,
        restart_s=round(restarted_at - killed_at, 1),
        recovered_after_s=round(first_ok - killed_at, 1),
        **bus,
    )
    assert bus["bus_outcomes_missing"] == 0, bus


async def outage_under_load(
    kafka: str, platform: Platform, phase: str, stop: Callable[[], object], start: Callable[[], object]
) -> list[CallOutcome]:
    """A dependency down for OUTAGE_S under gRPC load with long (outlasting the outage) and short
    deadlines. Checks every call, that no service died, that the long-deadline calls asked in the middle
    of the outage were answered after the recovery (the stage retried up to their deadline), and that
    the monitor recorded every request once; records the phase's figures. Returns the short-deadline
    calls asked during the outage, for the test's own assertion on how they failed."""
    long_load = platform.load(phase, deadline_s=LONG_DEADLINE_S, concurrency=4)
    short_load = platform.load(phase, deadline_s=SHORT_DEADLINE_S, concurrency=2, stream_every=0)
    await wait_for(lambda: sum(o.ok for o in long_load.outcomes) >= 5, 60)
    stopping_at = time.monotonic()
    stop()
    down_at = time.monotonic()
    await asyncio.sleep(OUTAGE_S / 3)
    # Calls asked in the middle of the outage, with a deadline that outlasts it.
    probes = [
        asyncio.create_task(long_load.ask(QUESTIONS[i % len(QUESTIONS)], stream=i % 2 == 0)) for i in range(4)
    ]
    await asyncio.sleep(max(OUTAGE_S - (time.monotonic() - stopping_at), 0))
    await asyncio.to_thread(start)
    up_at = time.monotonic()
    during = list(await asyncio.gather(*probes))
    short = await short_load.stop()
    long = await long_load.stop()
    outcomes = [*long, *short, *during]

    check_calls(outcomes)
    assert all(platform.alive().values()), platform.alive()
    # Retried up to each request's deadline: answered after the recovery.
    assert all(o.ok for o in during), summarize(during)
    short_during = [o for o in short if down_at + 1 < o.started and o.ended < up_at]
    assert short_during, summarize(short)
    bus = await check_requests_recorded(kafka, platform, phase, outcomes)
    platform.figures[f"{phase} down"] = phase_figures(
        outcomes,
        outage_s=round(up_at - stopping_at, 1),
        long_during_outage=summarize(during),
        short_during_outage=summarize(short_during),
        answered_after_recovery_s=round(max(o.ended for o in during) - up_at, 1),
        **bus,
    )
    assert bus["bus_outcomes_missing"] == 0, bus
    return short_during


async def test_triton_down_30s_long_deadlines_answered_short_ones_fail_clearly(
    kafka: str, platform: Platform
) -> None:
    triton = platform.stack.triton
    short_during = await outage_under_load(kafka, platform, "triton", triton.process().kill, triton.start)
    # Failed before their deadline, with the reason.
    assert not any(o.ok for o in short_during), summarize(short_during)


async def test_weaviate_down_30s_long_deadlines_answered_short_ones_fail_clearly(
    kafka: str, platform: Platform
) -> None:
    weaviate = platform.stack.weaviate
    short_during = await outage_under_load(kafka, platform, "weaviate", weaviate.stop, weaviate.start)
    # The retriever retried Weaviate up to their deadline, then said so.
    assert {o.code for o in short_during} == {"DEADLINE_EXCEEDED"}, summarize(short_during)


async def test_clickhouse_unavailable_30s_loses_no_telemetry(kafka: str, platform: Platform) -> None:
    monitor = platform.procs["monitor"]
    chdb = platform.workdir / "chdb"
    load = platform.load("clickhouse", deadline_s=DEADLINE_S, concurrency=4)
    await wait_for(lambda: sum(o.ok for o in load.outcomes) >= 5, 60)
    # The monitor owns the embedded ClickHouse; restart it while another process holds the path.
    assert monitor.terminate() == 0
    holder = await hold_chdb(chdb)
    try:
        down_at = time.monotonic()
        await asyncio.to_thread(monitor.start, 120)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await monitor_requests(monitor.grpc_target, tenant_of("clickhouse"))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(max(OUTAGE_S - (time.monotonic() - down_at), 0))
        assert monitor.proc is not None and monitor.proc.poll() is None, monitor.log_tail()
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    up_at = time.monotonic()
    await asyncio.sleep(2)
    outcomes = await load.stop()
    check_calls(outcomes)
    assert all(o.ok for o in outcomes), summarize(outcomes)  # the query path does not need ClickHouse
    assert all(platform.alive().values()), platform.alive()
    bus = await check_requests_recorded(kafka, platform, "clickhouse", outcomes)
    platform.figures["clickhouse unavailable"] = phase_figures(
        outcomes,
        outage_s=round(up_at - down_at, 1),
        caught_up_after_s=round(time.monotonic() - up_at, 1),
        **bus,
    )
    assert bus["bus_outcomes_missing"] == 0, bus
