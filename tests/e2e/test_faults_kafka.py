"""A Kafka broker killed under load (issue: reliability): three brokers (replication factor 3,
min.insync.replicas 2, producers with acks=all), the query path's embedder, retriever and generator as
processes, 10,000+ QueryRequested events in flight while the broker leading the most request
partitions gets SIGKILL. Every request the cluster acknowledged is answered, and answered once."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryRequested

from shared.events import new_meta
from shared.infra.kafka import KafkaCluster
from shared.infra.stack import Stack
from shared.topics import (
    CONTEXT_RETRIEVED,
    DOCUMENT_INDEXED,
    INGEST_REQUESTED,
    QUERY_ANSWERED,
    QUERY_EMBEDDED,
    QUERY_FAILED,
    QUERY_REQUESTED,
)
from tests.support.kafka_tools import committed_lag, produce_events, read_all, wait_for
from tests.support.load import (
    KAFKA3_PORT_BASE,
    Sends,
    Tail,
    partition_leaders,
    produce_acknowledged,
    wait_leaders_moved,
)
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

TENANT = "faultk"
REQUESTS = int(os.environ.get("LLMOPS_FAULT_KAFKA_REQUESTS", "11000"))
IN_FLIGHT_AT_KILL = REQUESTS * 10 // 11  # 10,000 requests sent and not yet answered when the broker dies
STAGES = (  # consumer group, input topic
    ("fk-embedder", QUERY_REQUESTED.name),
    ("fk-retriever", QUERY_EMBEDDED.name),
    ("fk-generator", CONTEXT_RETRIEVED.name),
)
PATH_TOPICS = [QUERY_REQUESTED.name, QUERY_EMBEDDED.name, CONTEXT_RETRIEVED.name, QUERY_ANSWERED.name]


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    state = Path(tempfile.mkdtemp(prefix="llmops-faults-kafka3-"))
    kafka = Stack(state, kafka_nodes=3, port_base=KAFKA3_PORT_BASE, components=("kafka",)).kafka
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def services(
    cluster: KafkaCluster,
    weaviate: str,
    triton: str,
    test_stack: Stack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ServiceProcess]]:
    workdir = tmp_path_factory.mktemp("faults-kafka")
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkFaultKafka",
        "LLMOPS_TRITON_GRPC_URL": triton,
        "LLMOPS_TENANTS_KNOWN": TENANT,
        # Larger batches than the defaults (32, 32, 16): fewer commits per request for the backlog.
        "LLMOPS_EMBEDDER_MAX_BATCH_RECORDS": "128",
        "LLMOPS_RETRIEVER_MAX_BATCH_RECORDS": "64",
        "LLMOPS_GENERATOR_MAX_BATCH_RECORDS": "32",
        **{f"LLMOPS_{group.split('-')[1].upper()}_CONSUMER_GROUP": group for group, _ in STAGES},
    }
    with platform_services(("embedder", "retriever", "generator"), env, workdir) as procs:
        document = DocumentIngestRequested(
            meta=new_meta(tenant_id=TENANT, producer="test"),
            document=Document(
                document_id="replication.md",
                content=b"Replicas keep the log safe. A write waits for two in-sync replicas.",
            ),
        )
        asyncio.run(produce_events(cluster.bootstrap_servers, INGEST_REQUESTED.name, [document]))
        indexed = asyncio.run(read_all(cluster.bootstrap_servers, DOCUMENT_INDEXED.name, 1, timeout_s=90))
        assert indexed, procs["retriever"].log_tail()
        yield procs


async def test_broker_killed_under_load_loses_no_acknowledged_request(
    cluster: KafkaCluster, services: dict[str, ServiceProcess]
) -> None:
    bootstrap = cluster.bootstrap_servers
    requests = [
        QueryRequested(
            meta=new_meta(tenant_id=TENANT, producer="load"), question=f"How is the log kept safe ({i})?"
        )
        for i in range(REQUESTS)
    ]
    leaders = await partition_leaders(bootstrap, [QUERY_REQUESTED.name])
    victim = Counter(leaders.values()).most_common(1)[0][0]  # node id; leads the most request partitions
    outcome_topics = (QUERY_ANSWERED.name, QUERY_FAILED.name)
    sends = Sends()
    started = time.monotonic()
    async with Tail(bootstrap, outcome_topics) as tail:
        producing = asyncio.create_task(
            produce_acknowledged(bootstrap, QUERY_REQUESTED.name, requests, sends)
        )
        # Kill once 10,000 requests are sent and unanswered; the last sends race the failover.
        await wait_for(
            lambda: sends.attempted - len(tail.keys()) >= IN_FLIGHT_AT_KILL or producing.done(), 120, 0.02
        )
        in_flight = sends.attempted - len(tail.keys())
        sent_after_kill = REQUESTS - sends.settled
        killed_at = time.monotonic()
        cluster.process(victim - 1).kill()
        failover_s = await wait_leaders_moved(bootstrap, PATH_TOPICS, victim, timeout_s=90)
        await producing
        acknowledged = sends.acknowledged
        answered_all = await tail.wait_covering(acknowledged, 420)
        answered_at = time.monotonic()
        # Nothing left to redeliver (every stage committed everything), then read to the end: a
        # duplicate produced by a redelivery would be on the topic by now.
        for group, topic in STAGES:
            for _ in range(120):
                if await committed_lag(bootstrap, topic, group) == 0:
                    break
                await asyncio.sleep(0.5)
        await tail.drain()
        arrivals = sorted(t for t in tail.arrivals if t > killed_at)
    counts = tail.keys(*outcome_topics)
    lost = sorted(k for k in acknowledged if counts[k] == 0)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    failed = tail.counts[QUERY_FAILED.name]
    longest_gap = max((b - a for a, b in zip([killed_at, *arrivals], arrivals, strict=False)), default=0.0)
    figures = {
        "requests": REQUESTS,
        "acknowledged": len(acknowledged),
        "refused": len(sends.refused),
        "in_flight_at_kill": in_flight,
        "unacknowledged_at_kill": sent_after_kill,
        "killed_node": victim,
        "leaders_moved_s": round(failover_s, 1),
        "longest_answer_gap_after_kill_s": round(longest_gap, 1),
        "all_answered_after_s": round(answered_at - started, 1),
        "answered": len(tail.counts[QUERY_ANSWERED.name]),
        "failed": len(failed),
        "lost": len(lost),
        "duplicates": len(duplicates),
    }
    print("broker-kill figures:", figures)
    assert in_flight >= IN_FLIGHT_AT_KILL, figures
    assert answered_all and not lost, (figures, lost[:5], services["generator"].log_tail(20))
    assert not sends.refused, (figures, list(sends.refused.items())[:3])
    assert not duplicates, (figures, list(duplicates.items())[:5])
    assert not failed, (figures, list(failed)[:5])
    assert all(p.proc is not None and p.proc.poll() is None for p in services.values())
