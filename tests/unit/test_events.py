from __future__ import annotations

import uuid

from llmops.common.v1.event_meta_pb2 import EventMeta
from llmops.query.v1.events_pb2 import QueryRequested

from shared.events import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    event_headers,
    follow_meta,
    new_meta,
    validate_meta,
)


def test_new_meta_is_complete_and_valid() -> None:
    meta = new_meta(tenant_id="t1", producer="gateway")
    assert uuid.UUID(meta.event_id).version == 4
    assert meta.correlation_id and meta.correlation_id != meta.event_id
    assert meta.occurred_at.seconds > 0
    assert (meta.producer, meta.schema_version) == ("gateway", 1)
    assert validate_meta(meta) == []


def test_follow_meta_keeps_request_and_tenant_with_a_new_event_id() -> None:
    cause = new_meta(tenant_id="t1", producer="gateway")
    follow = follow_meta(cause, producer="embedder")
    assert follow.correlation_id == cause.correlation_id
    assert follow.tenant_id == "t1"
    assert follow.event_id != cause.event_id
    assert follow.producer == "embedder"


def test_validate_meta_names_each_problem() -> None:
    problems = validate_meta(EventMeta(event_id="not-a-uuid"))
    assert any("not a UUID" in p for p in problems)
    assert "meta.tenant_id is empty" in problems
    assert "meta.correlation_id is empty" in problems
    assert validate_meta(EventMeta()) == [
        "meta.event_id is empty",
        "meta.tenant_id is empty",
        "meta.correlation_id is empty",
    ]


def test_event_headers_name_the_type_and_id() -> None:
    event = QueryRequested(meta=new_meta(tenant_id="t", producer="p"))
    headers = event_headers(event)
    assert headers[HEADER_EVENT_TYPE] == "llmops.query.v1.QueryRequested"
    assert headers[HEADER_EVENT_ID] == event.meta.event_id
