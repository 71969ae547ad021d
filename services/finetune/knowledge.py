"""Approved interactions as retrievable knowledge (pure).

An answer that feedback approved (a correction, or thumbs up / a rating >= the accept rating, as in
curation) becomes a small document of its tenant: the question and the approved answer (the
correction when there is one), already PII-scrubbed in the store. The finetune publishes it as a
DocumentIngestRequested, so the embedder and retriever index it like any document and later queries of
that tenant can be grounded in it and cite it (`feedback:<correlation id>`). Its document id derives
from the correlation id: a later verdict on the same answer replaces the document (a new correction) or
retracts it (thumbs down after approval: DocumentDeleteRequested). An unchanged document is indexed
once (the retriever skips content it already holds), so replays add nothing.

The delete of a retraction can overtake the ingest of the approval it retracts (the ingest goes
through the embedder, the delete straight to the retriever). The finetune therefore also reads the
retriever's DocumentIndexed events: a knowledge document indexed while its interaction stands
retracted is deleted again (`interaction_of` maps the document back to its interaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmops.ingest.v1.document_pb2 import Document, DocumentFormat

from services.finetune.curation import Answered, Feedback, judge
from shared.documents import content_sha256

SOURCE_SCHEME = "feedback:"
KIND = "approved_interaction"


DOCUMENT_PREFIX = "interaction-"


def knowledge_document_id(correlation_id: str) -> str:
    return f"{DOCUMENT_PREFIX}{correlation_id}"


def interaction_of(document_id: str) -> str | None:
    """The correlation id whose knowledge document `document_id` is; None for any other document."""
    if document_id.startswith(DOCUMENT_PREFIX) and len(document_id) > len(DOCUMENT_PREFIX):
        return document_id[len(DOCUMENT_PREFIX) :]
    return None


@dataclass(frozen=True)
class Index:
    """Index (or re-index) this approved interaction."""

    document: Document


@dataclass(frozen=True)
class Retract:
    """An interaction approved before is rejected now: delete its document."""

    document_id: str


def knowledge_document(answered: Answered, answer: str) -> Document:
    content = f"{answered.question.strip()}\n{answer.strip()}\n".encode()
    return Document(
        document_id=knowledge_document_id(answered.correlation_id),
        source_uri=f"{SOURCE_SCHEME}{answered.correlation_id}",
        format=DocumentFormat.DOCUMENT_FORMAT_PLAIN_TEXT,
        content=content,
        content_sha256=content_sha256(content),
        metadata={"kind": KIND, "correlation_id": answered.correlation_id},
    )


def knowledge_action(
    answered: Answered | None, history: Sequence[Feedback], min_accept_rating: int
) -> Index | Retract | None:
    """What the feedback `history` of one answer means for the tenant's knowledge: the latest feedback
    (by event time, then event id) decides; nothing until the answer itself has arrived."""
    if answered is None or not history or not answered.question.strip():
        return None
    ordered = sorted(history, key=lambda f: (f.occurred_ms, f.event_id))
    latest = judge(ordered[-1], min_accept_rating)
    if latest == "correction":
        return Index(knowledge_document(answered, ordered[-1].correction))
    if latest == "accepted" and answered.answer.strip():
        return Index(knowledge_document(answered, answered.answer))
    approved_before = any(judge(f, min_accept_rating) in ("correction", "accepted") for f in ordered[:-1])
    if latest == "rejected" and approved_before:
        return Retract(knowledge_document_id(answered.correlation_id))
    return None
