"""Weaviate down: ingestion waits without losing events, queries fail clearly (issue: ingestion and
retrieval). Uses its own Weaviate so stopping it does not disturb the other tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import DocumentIndexed, DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryFailed, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from shared.events import new_meta
from shared.infra.stack import Stack
from shared.topics import DOCUMENT_INDEXED, INGEST_REQUESTED, QUERY_FAILED, QUERY_REQUESTED
from tests.support.kafka_tools import decode_records, produce_events, read_all
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def outage_stack() -> Iterator[Stack]:
    state = Path(tempfile.mkdtemp(prefix="llmops-outage-"))
    stack = Stack(state, port_base=29700, components=("weaviate",))
    stack.weaviate.start()
    yield stack
    stack.weaviate.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def services(
    kafka: str, outage_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    workdir = tmp_path_factory.mktemp("outage")
    common = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": outage_stack.weaviate.url,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(outage_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkOutage",
        "LLMOPS_TENANTS_KNOWN": "outage",
        # Separate groups: this module's services must not share partitions with other tests' services.
        "LLMOPS_EMBEDDER_CONSUMER_GROUP": "outage-embedder",
        "LLMOPS_RETRIEVER_CONSUMER_GROUP": "outage-retriever",
    }
    with platform_services(("embedder", "retriever"), common, workdir) as procs:
        yield procs


async def test_ingest_during_outage_is_indexed_after_recovery_and_queries_fail_clearly(
    kafka: str, outage_stack: Stack, services: dict[str, ServiceProcess]
) -> None:
    outage_stack.weaviate.stop()
    # Ingest while Weaviate is down (straight onto the bus, as an upstream system would).
    events = [
        DocumentIngestRequested(
            meta=new_meta(tenant_id="outage", producer="upstream"),
            document=Document(document_id=f"doc-{i}", content=f"Outage document number {i}.".encode()),
        )
        for i in range(5)
    ]
    await produce_events(kafka, INGEST_REQUESTED.name, events)
    # A query during the outage gets a clear failure once the retriever's retry budget is spent.
    query = QueryRequested(
        meta=new_meta(tenant_id="outage", producer="upstream"), question="outage document?"
    )
    await produce_events(kafka, QUERY_REQUESTED.name, [query])
    failures = []
    for _ in range(12):
        records = await read_all(kafka, QUERY_FAILED.name, expected=10_000, timeout_s=5)
        failures = [r for r in records if r.key == query.meta.correlation_id.encode()]
        if failures:
            break
    assert failures, services["retriever"].log_tail()
    failed = QueryFailed()
    failed.ParseFromString(failures[0].value)
    assert failed.reason == FailureReason.FAILURE_REASON_UNAVAILABLE
    assert "unavailable" in failed.detail and failed.failed_stage == "retriever"
    assert services["retriever"].proc is not None and services["retriever"].proc.poll() is None

    outage_stack.weaviate.start()  # same data folder: a restart, not a new server
    # Every document ingested during the outage is indexed by its own event once Weaviate is back.
    wanted = {e.meta.correlation_id for e in events}
    seen: set[str] = set()
    for _ in range(24):
        records = await read_all(kafka, DOCUMENT_INDEXED.name, expected=100_000, timeout_s=5)
        seen.update(indexed.meta.correlation_id for _, indexed in decode_records(records, DocumentIndexed))
        if wanted <= seen:
            break
    assert wanted <= seen, services["retriever"].log_tail()
