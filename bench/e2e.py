"""End-to-end latency of a gRPC Query against the sum of the per-stage service times in its answer, and
with the monitor running against without it.

The whole query path runs as separate processes (gateway, embedder, retriever, generator) on a
private Kafka, Weaviate and Triton serving `tiny_llm`. Each sequential Query's wall time at the client
(variant A) is set against the time the stages report spending on it (variant B = embed + retrieve +
generate, from the answer's timings). A / B is the platform's overhead: the Kafka hops between
stages, gRPC, (de)serialisation and waiting in consumers' poll loops.

Monitor on vs off: the same sequential Query loop in many short alternating blocks (ABBA: off on, on
off, ...). One monitor process consumes the query path's topics into chdb; it is started once and
caught up, then switched off for an off block by SIGSTOP (frozen: no CPU, no fetches) and on again by
SIGCONT, after which it catches up with the answers of the off block before the on block starts. Every
block, on or off, starts after the same pause of the query path (BLOCK_PAUSE_S), within which a resumed
monitor catches up. Short
blocks (a second or two, well inside the consumer's session timeout, so no rebalance) follow load
drifts on a shared machine; each off/on pair gives a ratio of its block medians, and the row reports
the median of the per-pair ratios with their interquartile range. The first row uses the off blocks.

Monitor draining a backlog: the monitor is busiest when it catches up (after a ClickHouse outage, or
a restart), a full core for as long as the backlog lasts. DRAIN_EVENTS realistic QueryAnswered events
of another tenant wait on the topic; a fresh monitor (its own consumer group and chdb folder) is
started DRAINS times, and the same sequential Query loop runs from when it is healthy until it has
stored the whole backlog. The row sets the query p50 during the drains against the off blocks' p50 of
the same run: what catching up costs the query path where both share the CPUs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.ingest.v1.document_pb2 import Document
from llmops.monitor.v1 import monitor_service_pb2 as monitor_pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as monitor_grpc

from bench.monitor import COMPRESSION, make_events, produce_events
from bench.report import Row, rate, status
from services.cli.stack import service_process
from services.gateway.auth import issue_key
from shared.infra.process import ManagedProcess
from shared.infra.stack import Stack

PORT_BASE = 37000
TENANT = "bench"
SERVICES = ("embedder", "retriever", "generator", "gateway")
MONITOR_GRPC_PORT = PORT_BASE + 155
SETTLE_S = 5.0  # after the monitor started and caught up, before the first block
RESUME_SETTLE_S = 0.2  # after a resumed monitor caught up, before an on block
# Every block starts after the same pause of the query path, whatever its mode; a resumed monitor
# catches up within it. With a pause only before the on blocks that follow an off block (the catch-up),
# the first query after it was 10-15 ms slower than the rest of its block, and those on blocks' p50
# 3-9 ms above the on blocks that follow an on block (five runs): a cost of pausing, set against the
# monitor.
BLOCK_PAUSE_S = 1.5
# Off/on block pairs, in ABBA order (off on, on off, ...) so a drift in load cancels out; with the
# default 200 queries a block is 10 queries (~1 s), far below the consumer's session timeout while frozen.
PAIRS = 20
ORDER = [mode for pair in range(PAIRS) for mode in (("off", "on") if pair % 2 == 0 else ("on", "off"))]
STUB: Any = monitor_grpc.MonitorServiceStub  # grpcio-tools writes no types for *_pb2_grpc
DRAIN_TENANT = "bench-drain"
DRAIN_EVENTS = 60_000  # ~5 s of draining for one monitor process on this machine
DRAINS = 2
SERVICE_STAGES = ("embed", "retrieve", "generate")
TOPICS = {
    "kafka": "Kafka stores every topic as partitions of an ordered log.",
    "raft": "Raft elects one leader per term that replicates log entries to a majority.",
    "bread": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "hnsw": "HNSW indexes vectors in a layered graph so nearest neighbours are found in log time.",
}
QUESTIONS = [
    "How does Kafka store a topic?",
    "How does Raft pick a leader?",
    "Why does sourdough rise slowly?",
    "How does HNSW find neighbours?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _stored_requests(target: str, tenant: str = TENANT) -> int:
    """Requests of `tenant` the monitor has stored (0 while it cannot answer yet)."""
    window = monitor_pb.TimeWindow()
    window.start.FromSeconds(int(time.time()) - 86400)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            response = await STUB(channel).GetTraffic(
                monitor_pb.GetTrafficRequest(tenant_id=tenant, window=window, bucket_seconds=86400),
                timeout=10,
            )
    except grpc.aio.AioRpcError:
        return 0
    return int(response.requests)


async def _caught_up(
    answered: int,
    target: str = f"127.0.0.1:{MONITOR_GRPC_PORT}",
    tenant: str = TENANT,
    *,
    timeout_s: float = 120,
    interval_s: float = 0.05,
) -> float:
    """Wait until the monitor at `target` has stored `answered` requests of `tenant`; seconds it took."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while await _stored_requests(target, tenant) < answered:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the monitor did not catch up with {answered} answers in {timeout_s:.0f} s")
        await asyncio.sleep(interval_s)
    return time.perf_counter() - started


async def _timed_query(stub: Any, md: tuple[tuple[str, str], ...], question: str) -> tuple[float, Any]:
    """One gRPC Query: its wall time at the client in ms, and its response."""
    started = time.perf_counter()
    response = await stub.Query(query_pb.QueryRequest(question=question), metadata=md, timeout=30)
    return (time.perf_counter() - started) * 1000, response


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    if pid is None:
        raise RuntimeError("the monitor process is not running")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _signal(monitor: ManagedProcess, sig: signal.Signals) -> None:
    pid = monitor.pid()
    if pid is None:
        raise RuntimeError("the monitor process is not running")
    os.kill(pid, sig)


async def _pause_and_switch(monitor: ManagedProcess, mode: str, running: bool, answered: int) -> float | None:
    """Freeze or resume the monitor for a block of `mode`, within the pause every block starts after;
    the seconds a resumed monitor took to catch up (None when it was not resumed)."""
    started = time.perf_counter()
    catch_up: float | None = None
    if mode == "on" and not running:
        _signal(monitor, signal.SIGCONT)
        catch_up = await _caught_up(answered)
    elif mode == "off" and running:
        _signal(monitor, signal.SIGSTOP)
    settle_s = RESUME_SETTLE_S if catch_up is not None else 0.0
    await asyncio.sleep(max(BLOCK_PAUSE_S - (time.perf_counter() - started), settle_s))
    return catch_up


async def _measure(
    target: str, api_key: str, queries: int, monitor: ManagedProcess
) -> tuple[dict[str, list[list[float]]], list[float], list[float], list[float], float]:
    """Blocks of `queries` sequential queries in ORDER, the monitor frozen (SIGSTOP) for off blocks and
    resumed (SIGCONT) and caught up before on blocks: per mode the blocks' wall times; the off blocks'
    wall and stage times; the monitor's catch-up times after each resume; the share of one CPU the
    monitor used during the on blocks."""
    md = (("x-api-key", api_key),)
    blocks: dict[str, list[list[float]]] = {"off": [], "on": []}
    off_wall: list[float] = []
    off_stages: list[float] = []
    catch_up_s: list[float] = []
    monitor_cpu = [0.0, 0.0]  # the monitor's CPU seconds during on blocks, and those blocks' seconds
    answered = 0
    async with grpc.aio.insecure_channel(target) as channel:
        ingest = ingest_grpc.IngestServiceStub(channel)
        for doc_id, text in TOPICS.items():
            document = Document(document_id=doc_id, source_uri=f"bench://{doc_id}", content=text.encode())
            await ingest.Ingest(ingest_pb.IngestRequest(document=document, wait_indexed=True), metadata=md)
        stub = query_grpc.QueryServiceStub(channel)
        for question in QUESTIONS * 3:  # warm-up: connections, caches, JIT-free but lazy imports
            await stub.Query(query_pb.QueryRequest(question=question), metadata=md, timeout=30)
            answered += 1
        await asyncio.to_thread(monitor.start)
        await _caught_up(answered)
        await asyncio.sleep(SETTLE_S)  # start-up work (the engine's first merges) is not steady state
        running = True
        try:
            for n, mode in enumerate(ORDER):
                catch_up = await _pause_and_switch(monitor, mode, running, answered)
                running = mode == "on"
                if catch_up is not None:
                    catch_up_s.append(catch_up)
                wall_ms: list[float] = []
                cpu_before, block_started = _cpu_s(monitor.pid()), time.perf_counter()
                for i in range(queries):  # one at a time: latency, not throughput
                    ms, response = await _timed_query(stub, md, QUESTIONS[i % len(QUESTIONS)])
                    wall_ms.append(ms)
                    answered += 1
                    if mode == "off":
                        timings = {t.stage: t.duration_ms for t in response.timings}
                        off_stages.append(sum(timings[s] for s in SERVICE_STAGES))
                blocks[mode].append(wall_ms)
                if mode == "on":
                    monitor_cpu[0] += _cpu_s(monitor.pid()) - cpu_before
                    monitor_cpu[1] += time.perf_counter() - block_started
                if mode == "off":
                    off_wall += wall_ms
                if n % 8 == 7 or n == len(ORDER) - 1:
                    status(
                        f"e2e: block {n + 1}/{len(ORDER)} monitor {mode}: p50 "
                        f"{statistics.median(wall_ms):.1f} ms over {queries} queries"
                    )
        finally:
            if not running:
                _signal(monitor, signal.SIGCONT)  # a frozen process does not stop on SIGTERM
            await asyncio.to_thread(monitor.stop)
    return blocks, off_wall, off_stages, catch_up_s, monitor_cpu[0] / monitor_cpu[1]


async def _query_while_draining(
    target: str, api_key: str, monitor: ManagedProcess, monitor_target: str
) -> tuple[list[float], float]:
    """Start `monitor` on the waiting backlog and run sequential queries until it has stored all of
    DRAIN_EVENTS: the queries' wall times and the drain's events/s (from healthy to stored)."""
    md = (("x-api-key", api_key),)
    await asyncio.to_thread(monitor.start)
    watcher = asyncio.create_task(
        _caught_up(DRAIN_EVENTS, monitor_target, DRAIN_TENANT, timeout_s=300, interval_s=0.25)
    )
    wall_ms: list[float] = []
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = query_grpc.QueryServiceStub(channel)
            while not watcher.done():  # done: drained (or failed, which `await watcher` raises)
                ms, _ = await _timed_query(stub, md, QUESTIONS[len(wall_ms) % len(QUESTIONS)])
                wall_ms.append(ms)
        drain_s = await watcher
    finally:
        watcher.cancel()
        await asyncio.to_thread(monitor.stop)
    return wall_ms, DRAIN_EVENTS / drain_s


async def _measure_drains(
    target: str,
    api_key: str,
    bootstrap: str,
    drain_monitor: Callable[[int], tuple[ManagedProcess, str]],
) -> list[tuple[list[float], float]]:
    """(query wall times, drain events/s) of each of DRAINS drains."""
    await produce_events(bootstrap, make_events(DRAIN_EVENTS, tenant=DRAIN_TENANT))
    # The gateway reads the answers topic for its callers' replies: one query first, so it has read
    # past the backlog (seconds) before any drain is timed.
    async with grpc.aio.insecure_channel(target) as channel:
        await query_grpc.QueryServiceStub(channel).Query(
            query_pb.QueryRequest(question=QUESTIONS[0]), metadata=(("x-api-key", api_key),), timeout=120
        )
    result = []
    for n in range(DRAINS):
        monitor, monitor_target = drain_monitor(n)
        wall_ms, drain_rate = await _query_while_draining(target, api_key, monitor, monitor_target)
        result.append((wall_ms, drain_rate))
        status(
            f"e2e: drain {n + 1}/{DRAINS}: query p50 {statistics.median(wall_ms):.1f} ms over "
            f"{len(wall_ms)} queries, {rate(drain_rate)} stored"
        )
    return result


def pair_ratios(blocks: dict[str, list[list[float]]]) -> list[float]:
    """Per off/on pair (in ORDER, the i-th off block with the i-th on block): on p50 / off p50."""
    return [
        statistics.median(on) / statistics.median(off)
        for off, on in zip(blocks["off"], blocks["on"], strict=True)
    ]


def pooled_ratio_interval(
    blocks: dict[str, list[list[float]]], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of (p50 of all on queries) / (p50 of all off queries), resampling whole off/on pairs
    (a block bootstrap: queries of one block are not independent)."""
    rng = random.Random(seed)
    pairs = list(zip(blocks["off"], blocks["on"], strict=True))
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(pairs, k=len(pairs))
        off = [ms for block, _ in drawn for ms in block]
        on = [ms for _, block in drawn for ms in block]
        ratios.append(statistics.median(on) / statistics.median(off))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def quartiles(values: list[float]) -> tuple[float, float]:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def run_e2e(queries: int = 200) -> tuple[list[Row], dict[str, Any]]:
    """`queries` in the monitor-off blocks (and as many in the on blocks): PAIRS blocks of each."""
    block = max(1, queries // PAIRS)
    with tempfile.TemporaryDirectory(prefix="llmops-bench-e2e-") as state_dir:
        stack = Stack(
            Path(state_dir),
            port_base=PORT_BASE,
            components=("kafka", "weaviate", "triton"),
            triton_models=["tiny_llm"],
        )
        keys_file = Path(state_dir) / "api-keys.json"
        api_key = issue_key(keys_file, TENANT)
        env = {
            "LLMOPS_TENANTS_KNOWN": TENANT,
            "LLMOPS_WEAVIATE_COLLECTION": "BenchE2e",
            "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
            "LLMOPS_KAFKA_COMPRESSION_TYPE": COMPRESSION,  # as the monitor benchmark's producers
        }
        procs = [
            service_process(
                stack,
                name,
                grpc_port=PORT_BASE + 151 + i,  # clear of the stack's ports (Weaviate gRPC is +51)
                env={**env, f"LLMOPS_{name.upper()}_LOG_LEVEL": "WARNING"},
                start_timeout_s=300,
            )
            for i, name in enumerate(SERVICES)
        ]
        monitor = service_process(
            stack,
            "monitor",
            grpc_port=MONITOR_GRPC_PORT,
            env={
                **env,
                "LLMOPS_MONITOR_LOG_LEVEL": "WARNING",
                "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(Path(state_dir) / "monitor-chdb"),
            },
            start_timeout_s=300,
        )
        try:
            status("e2e: starting Kafka, Weaviate, Triton and the four query-path services")
            stack.up()
            for proc in procs:
                proc.start(wait=False)
            for proc in procs:
                proc.wait_healthy()
            blocks, wall_ms, stages_ms, catch_up_s, monitor_cpu_share = asyncio.run(
                _measure(f"127.0.0.1:{PORT_BASE + 154}", api_key, block, monitor)
            )

            def drain_monitor(n: int) -> tuple[ManagedProcess, str]:
                port = MONITOR_GRPC_PORT + 1 + n
                proc = service_process(
                    stack,
                    "monitor",
                    grpc_port=port,
                    env={
                        **env,
                        "LLMOPS_TENANTS_KNOWN": f"{TENANT},{DRAIN_TENANT}",
                        "LLMOPS_MONITOR_LOG_LEVEL": "WARNING",
                        "LLMOPS_MONITOR_CONSUMER_GROUP": f"bench-drain-{n}",
                        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(Path(state_dir) / f"drain-chdb-{n}"),
                    },
                    start_timeout_s=300,
                )
                return dataclasses.replace(proc, name=f"monitor-drain-{n}"), f"127.0.0.1:{port}"

            drains = asyncio.run(
                _measure_drains(
                    f"127.0.0.1:{PORT_BASE + 154}", api_key, stack.kafka.bootstrap_servers, drain_monitor
                )
            )
        finally:
            monitor.stop()
            for proc in procs:
                proc.stop()
            stack.down()
    wall_p50, stages_p50 = statistics.median(wall_ms), statistics.median(stages_ms)
    overhead = [w - s for w, s in zip(wall_ms, stages_ms, strict=True)]
    notes = (
        f"{len(wall_ms)} sequential gRPC Query calls (tiny_llm, 4 documents; the monitor-off blocks); A = "
        f"wall time at the client, p99 {percentile(wall_ms, 99):.1f} ms; B = embed + retrieve + generate as "
        f"the stages report them, p99 {percentile(stages_ms, 99):.1f} ms; overhead A - B p50 "
        f"{statistics.median(overhead):.1f} ms, p99 {percentile(overhead, 99):.1f} ms (4 Kafka hops, gRPC, "
        "polling)"
    )
    block_p50 = {mode: [statistics.median(b) for b in runs] for mode, runs in blocks.items()}
    on_p50, off_p50 = statistics.median(block_p50["on"]), statistics.median(block_p50["off"])
    on_all = [ms for b in blocks["on"] for ms in b]
    off_all = [ms for b in blocks["off"] for ms in b]
    ratios = pair_ratios(blocks)
    ratio = statistics.median(ratios)
    q1, q3 = quartiles(ratios)
    low, high = pooled_ratio_interval(blocks)
    # Blocks where every query waited ~0.4 s (each Kafka hop ~0.2 s late; mostly on blocks right after
    # a resume, once an off block, some runs none): counted, so a ratio they move is recognisable.
    stalled = {mode: sum(p50 > 3 * off_p50 for p50 in block_p50[mode]) for mode in block_p50}
    monitor_notes = (
        f"{PAIRS} pairs of blocks of {block} sequential gRPC Query calls, monitor off and on in ABBA order "
        "(one monitor process, frozen by SIGSTOP for off blocks, resumed by SIGCONT and caught up with "
        f"every answer before on blocks; every block after a {BLOCK_PAUSE_S:g} s pause of the query path); "
        "ratio = median over pairs of on p50 / off p50, interquartile "
        f"range {q1:.3f}-{q3:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; p50 over all blocks off "
        f"{statistics.median(off_all):.1f} ms, on {statistics.median(on_all):.1f} ms (ratio "
        f"{statistics.median(on_all) / statistics.median(off_all):.3f}, 95% pair-bootstrap interval "
        f"{low:.3f}-{high:.3f}); p99 off "
        f"{percentile(off_all, 99):.1f} ms, on {percentile(on_all, 99):.1f} ms; goal ratio <= 1.02; "
        f"catch-up after resume median {statistics.median(catch_up_s) * 1000:.0f} ms; the monitor used "
        f"{monitor_cpu_share:.1%} of one CPU during the on blocks; blocks with p50 over 3x the off p50: "
        f"on {stalled['on']}, off {stalled['off']}"
    )
    drain_all = [ms for wall, _ in drains for ms in wall]
    drain_p50, off_all_p50 = statistics.median(drain_all), statistics.median(off_all)
    drain_notes = (
        f"a fresh monitor process drains {DRAIN_EVENTS:,} waiting QueryAnswered events (~3 KB) while "
        "sequential gRPC Query calls run, from healthy until every event is stored; "
        f"{DRAINS} drains, {len(drain_all)} queries; B = the off blocks above; p99 during drains "
        f"{percentile(drain_all, 99):.1f} vs off {percentile(off_all, 99):.1f} ms; drain rates "
        f"{', '.join(rate(r) for _, r in drains)} (one core shared with the query path and Kafka)"
    )
    rows = [
        Row(
            "query end-to-end latency p50 (ms)",
            f"gRPC Query {wall_p50:.1f}",
            f"sum of stage times {stages_p50:.1f}",
            f"{wall_p50 / stages_p50:.2f}",
            notes,
        ),
        Row(
            "query end-to-end latency p50, monitor on vs off (ms)",
            f"monitor on {on_p50:.1f}",
            f"monitor off {off_p50:.1f}",
            f"{ratio:.3f}",
            monitor_notes,
        ),
        Row(
            "query p50 while the monitor drains a backlog vs monitor off (ms)",
            f"draining {drain_p50:.1f}",
            f"monitor off {off_all_p50:.1f}",
            f"{drain_p50 / off_all_p50:.3f}",
            drain_notes,
        ),
    ]
    raw = {
        "queries_per_block": block,
        "wall_ms": wall_ms,
        "stages_ms": stages_ms,
        "monitor_blocks_ms": blocks,
        "monitor_block_p50_ms": block_p50,
        "monitor_catch_up_s": catch_up_s,
        "monitor_pair_ratios": ratios,
        "monitor_cpu_share_on_blocks": monitor_cpu_share,
        "drain_query_ms": [wall for wall, _ in drains],
        "drain_events_per_s": [r for _, r in drains],
    }
    return rows, raw
