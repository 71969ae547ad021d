"""The topic catalog: the one place that says which topics exist, what they carry and who uses them.

Infra scripts create topics from it, services subscribe and publish by it, and the AsyncAPI
document (`make asyncapi`) and the README table are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message
from llmops.feedback.v1 import events_pb2 as feedback_events
from llmops.finetune.v1 import events_pb2 as finetune_events
from llmops.ingest.v1 import events_pb2 as ingest_events
from llmops.query.v1 import events_pb2 as query_events
from llmops.telemetry.v1 import events_pb2 as telemetry_events

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    message: type[Message] | None  # None: raw bytes (the dead-letter topic keeps payloads as they came)
    key: str
    partitions: int
    retention_ms: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str

    @property
    def message_name(self) -> str:
        return self.message.DESCRIPTOR.full_name if self.message else "bytes (original payload)"


INGEST_REQUESTED = Topic(
    "llmops.ingest.requested.v1",
    ingest_events.DocumentIngestRequested,
    "tenant_id/document_id",
    6,
    7 * DAY_MS,
    ("gateway", "cli", "upstream"),
    ("embedder",),
    "A document to chunk, embed and index.",
)
CHUNKS_EMBEDDED = Topic(
    "llmops.ingest.chunks-embedded.v1",
    ingest_events.ChunksEmbedded,
    "tenant_id/document_id",
    6,
    3 * DAY_MS,
    ("embedder",),
    ("retriever",),
    "A document's chunks with their vectors.",
)
DOCUMENT_INDEXED = Topic(
    "llmops.ingest.indexed.v1",
    ingest_events.DocumentIndexed,
    "tenant_id/document_id",
    3,
    7 * DAY_MS,
    ("retriever",),
    ("gateway", "monitor", "finetune"),
    "A document is searchable (or was unchanged).",
)
DELETE_REQUESTED = Topic(
    "llmops.ingest.delete-requested.v1",
    ingest_events.DocumentDeleteRequested,
    "tenant_id/document_id",
    3,
    7 * DAY_MS,
    ("gateway", "cli", "upstream"),
    ("retriever",),
    "Remove a document and its chunks.",
)
DOCUMENT_DELETED = Topic(
    "llmops.ingest.deleted.v1",
    ingest_events.DocumentDeleted,
    "tenant_id/document_id",
    3,
    7 * DAY_MS,
    ("retriever",),
    ("monitor",),
    "A document's chunks are gone.",
)
INGEST_FAILED = Topic(
    "llmops.ingest.failed.v1",
    ingest_events.DocumentIngestFailed,
    "tenant_id/document_id",
    3,
    7 * DAY_MS,
    ("embedder", "retriever"),
    ("gateway", "monitor"),
    "Documents that cannot be ingested, with the reason.",
)
QUERY_REQUESTED = Topic(
    "llmops.query.requested.v1",
    query_events.QueryRequested,
    "correlation_id",
    12,
    1 * DAY_MS,
    ("gateway", "upstream"),
    ("embedder",),
    "A question to answer; upstream systems may produce it directly.",
)
QUERY_EMBEDDED = Topic(
    "llmops.query.embedded.v1",
    query_events.QueryEmbedded,
    "correlation_id",
    12,
    1 * DAY_MS,
    ("embedder",),
    ("retriever", "monitor"),
    "A question with its embedding.",
)
CONTEXT_RETRIEVED = Topic(
    "llmops.query.context-retrieved.v1",
    query_events.ContextRetrieved,
    "correlation_id",
    12,
    1 * DAY_MS,
    ("retriever",),
    ("generator",),
    "Grounding context for a question.",
)
GENERATION_CHUNKS = Topic(
    "llmops.query.generation-chunks.v1",
    query_events.GenerationChunk,
    "correlation_id",
    12,
    3600 * 1000,
    ("generator",),
    ("gateway",),
    "Streamed answer pieces (default reply stream).",
)
QUERY_ANSWERED = Topic(
    "llmops.query.answered.v1",
    query_events.QueryAnswered,
    "correlation_id",
    12,
    7 * DAY_MS,
    ("generator",),
    ("gateway", "monitor", "finetune", "upstream"),
    "Final answers with citations (default reply topic).",
)
QUERY_FAILED = Topic(
    "llmops.query.failed.v1",
    query_events.QueryFailed,
    "correlation_id",
    6,
    7 * DAY_MS,
    ("embedder", "retriever", "generator", "gateway"),
    ("gateway", "monitor", "upstream"),
    "Queries that cannot be answered, with the reason.",
)
FEEDBACK_RECORDED = Topic(
    "llmops.feedback.recorded.v1",
    feedback_events.FeedbackRecorded,
    "correlation_id",
    3,
    90 * DAY_MS,
    ("gateway",),
    ("monitor", "finetune"),
    "User feedback on answers.",
)
TELEMETRY_SPANS = Topic(
    "llmops.telemetry.spans.v1",
    telemetry_events.TelemetrySpan,
    "correlation_id",
    6,
    3 * DAY_MS,
    ("embedder", "retriever", "generator", "gateway", "finetune"),
    ("monitor",),
    "One span per stage per request.",
)
QUALITY_ALERTS = Topic(
    "llmops.telemetry.quality-alerts.v1",
    telemetry_events.QualityAlert,
    "tenant_id",
    1,
    30 * DAY_MS,
    ("monitor",),
    ("finetune",),
    "Breached quality thresholds.",
)
FINETUNE_JOBS = Topic(
    "llmops.finetune.jobs.v1",
    finetune_events.FineTuneJobUpdated,
    "job_id",
    1,
    90 * DAY_MS,
    ("finetune",),
    ("monitor",),
    "Fine-tune job lifecycle transitions.",
)
MODEL_PROMOTED = Topic(
    "llmops.finetune.model-promoted.v1",
    finetune_events.ModelVersionPromoted,
    "model_name",
    1,
    365 * DAY_MS,
    ("finetune",),
    ("generator", "monitor"),
    "A model version starts serving (canary share or full).",
)
MODEL_ROLLED_BACK = Topic(
    "llmops.finetune.model-rolled-back.v1",
    finetune_events.ModelVersionRolledBack,
    "model_name",
    1,
    365 * DAY_MS,
    ("finetune",),
    ("generator", "monitor"),
    "A model version stops serving.",
)
DEAD_LETTER = Topic(
    "llmops.dead-letter.v1",
    None,
    "original key",
    3,
    30 * DAY_MS,
    ("every consumer",),
    ("ops",),
    "Events that could not be processed; reason and origin in headers.",
)

CATALOG: tuple[Topic, ...] = (
    INGEST_REQUESTED,
    CHUNKS_EMBEDDED,
    DOCUMENT_INDEXED,
    DELETE_REQUESTED,
    DOCUMENT_DELETED,
    INGEST_FAILED,
    QUERY_REQUESTED,
    QUERY_EMBEDDED,
    CONTEXT_RETRIEVED,
    GENERATION_CHUNKS,
    QUERY_ANSWERED,
    QUERY_FAILED,
    FEEDBACK_RECORDED,
    TELEMETRY_SPANS,
    QUALITY_ALERTS,
    FINETUNE_JOBS,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    DEAD_LETTER,
)
BY_NAME = {topic.name: topic for topic in CATALOG}


def markdown_table() -> str:
    """The catalog as the README's topic table."""
    rows = [
        "| topic | message | key | partitions | retention | producers | consumers |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in CATALOG:
        retention = (
            f"{t.retention_ms / DAY_MS:g} d" if t.retention_ms >= DAY_MS else f"{t.retention_ms / 3.6e6:g} h"
        )
        rows.append(
            f"| `{t.name}` | `{t.message_name}` | {t.key} | {t.partitions} | {retention} | "
            f"{', '.join(t.producers)} | {', '.join(t.consumers)} |"
        )
    return "\n".join(rows)
