"""The whole query path over the bus: QueryRequested in, QueryAnswered with citations out, through the
embedder, retriever and generator as separate processes on the real Kafka, Weaviate and Triton."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import DocumentIndexed, DocumentIngestRequested
from llmops.query.v1.events_pb2 import QueryAnswered, QueryRequested

from shared.events import new_meta
from shared.infra.stack import Stack
from shared.topics import DOCUMENT_INDEXED, INGEST_REQUESTED, QUERY_REQUESTED
from tests.support.kafka_tools import create_topics, produce_events, read_all, unique_topic
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

DOCS = {
    "kafka.md": "Kafka stores every topic as partitions of an ordered log. Consumers track offsets.",
    "bread.md": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
}


@pytest.fixture(scope="module")
def pipeline(
    kafka: str, weaviate: str, triton: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    names = ("embedder", "retriever", "generator")
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkFlow",
        "LLMOPS_TRITON_GRPC_URL": triton,
        "LLMOPS_TENANTS_KNOWN": "flow",
        **{f"LLMOPS_{name.upper()}_CONSUMER_GROUP": f"flow-{name}" for name in names},
    }
    with platform_services(names, env, tmp_path_factory.mktemp("flow")) as procs:
        yield procs


async def test_query_event_is_answered_with_a_citation_of_the_right_document(
    kafka: str, pipeline: dict[str, ServiceProcess]
) -> None:
    ingests = [
        DocumentIngestRequested(
            meta=new_meta(tenant_id="flow", producer="upstream"),
            document=Document(document_id=doc_id, source_uri=f"file:///{doc_id}", content=text.encode()),
        )
        for doc_id, text in DOCS.items()
    ]
    await produce_events(kafka, INGEST_REQUESTED.name, ingests)
    wanted = {e.meta.correlation_id for e in ingests}
    for _ in range(30):
        seen = set()
        for record in await read_all(kafka, DOCUMENT_INDEXED.name, expected=100_000, timeout_s=2):
            indexed = DocumentIndexed()
            indexed.ParseFromString(record.value)
            seen.add(indexed.meta.correlation_id)
        if wanted <= seen:
            break
        await asyncio.sleep(0.5)
    assert wanted <= seen, pipeline["retriever"].log_tail()

    reply_topic = unique_topic("answers")
    await create_topics(kafka, reply_topic, partitions=1)
    request = QueryRequested(
        meta=new_meta(tenant_id="flow", producer="upstream"),
        question="How does Kafka store a topic?",
        reply_topic=reply_topic,
    )
    await produce_events(kafka, QUERY_REQUESTED.name, [request])
    records = await read_all(kafka, reply_topic, expected=1, timeout_s=60)
    assert records, pipeline["generator"].log_tail()
    answered = QueryAnswered()
    answered.ParseFromString(records[0].value)
    assert answered.meta.correlation_id == request.meta.correlation_id
    assert answered.answer.startswith("Kafka stores every topic as partitions of an ordered log.")
    assert [c.document_id for c in answered.citations] == ["kafka.md"]
    assert answered.citations[0].source_uri == "file:///kafka.md"
    assert [t.stage for t in answered.timings][:2] == ["embed", "retrieve"]
    assert {"queue", "first_token", "generate"} <= {t.stage for t in answered.timings}
