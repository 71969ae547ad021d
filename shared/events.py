"""Event envelope helpers: every event carries EventMeta as field 1 (see proto/llmops/common/v1)."""

from __future__ import annotations

import uuid
from typing import Protocol

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.common.v1.event_meta_pb2 import EventMeta

SCHEMA_VERSION = 1

# Kafka headers the platform sets on every event it publishes.
HEADER_CONTENT_TYPE = "content-type"
HEADER_EVENT_TYPE = "event-type"
HEADER_EVENT_ID = "event-id"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"


class Event(Protocol):
    """A protobuf event message: has EventMeta in its `meta` field."""

    @property
    def meta(self) -> EventMeta: ...

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


def new_meta(*, tenant_id: str, producer: str, correlation_id: str | None = None) -> EventMeta:
    """Metadata for a new event; a fresh correlation id starts a new request."""
    occurred_at = Timestamp()
    occurred_at.GetCurrentTime()
    return EventMeta(
        event_id=str(uuid.uuid4()),
        correlation_id=correlation_id or str(uuid.uuid4()),
        tenant_id=tenant_id,
        occurred_at=occurred_at,
        producer=producer,
        schema_version=SCHEMA_VERSION,
    )


def follow_meta(cause: EventMeta, *, producer: str) -> EventMeta:
    """Metadata for an event caused by `cause`: same request and tenant, new event id."""
    return new_meta(tenant_id=cause.tenant_id, producer=producer, correlation_id=cause.correlation_id)


def event_headers(event: Message) -> dict[str, str]:
    """Headers that let any consumer (or a person with kcat) tell what a payload is."""
    headers = {
        HEADER_CONTENT_TYPE: PROTOBUF_CONTENT_TYPE,
        HEADER_EVENT_TYPE: event.DESCRIPTOR.full_name,
    }
    meta = getattr(event, "meta", None)
    if isinstance(meta, EventMeta) and meta.event_id:
        headers[HEADER_EVENT_ID] = meta.event_id
    return headers


def validate_meta(meta: EventMeta) -> list[str]:
    """Problems with an event's metadata; an empty list means it is usable."""
    problems = []
    if not meta.event_id:
        problems.append("meta.event_id is empty")
    else:
        try:
            uuid.UUID(meta.event_id)
        except ValueError:
            problems.append(f"meta.event_id {meta.event_id[:64]!r} is not a UUID")
    if not meta.tenant_id:
        problems.append("meta.tenant_id is empty")
    if not meta.correlation_id:
        problems.append("meta.correlation_id is empty")
    if meta.HasField("occurred_at"):
        try:
            meta.occurred_at.ToNanoseconds()
        except ValueError as exc:  # every consumer reads it; one bad value must not fail a whole batch
            problems.append(f"meta.occurred_at is not a valid timestamp: {exc}")
    return problems
