"""Query helpers every stage uses: deadlines and the failure a caller gets."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.query.v1.events_pb2 import QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from shared.events import new_meta
from shared.queries import InvalidDeadline, deadline_passed, query_failed, seconds_left


def request_with_deadline(offset_s: float | None) -> QueryRequested:
    request = QueryRequested(meta=new_meta(tenant_id="acme", producer="gateway"), question="q?")
    if offset_s is not None:
        deadline = Timestamp()
        deadline.GetCurrentTime()
        deadline.FromNanoseconds(deadline.ToNanoseconds() + int(offset_s * 1e9))
        request.deadline.CopyFrom(deadline)
    return request


def test_seconds_left_and_deadline_passed() -> None:
    assert seconds_left(request_with_deadline(None)) is None
    assert not deadline_passed(request_with_deadline(None))
    left = seconds_left(request_with_deadline(30))
    assert left is not None and 25 < left <= 30
    assert seconds_left(request_with_deadline(-5)) == 0.0 and deadline_passed(request_with_deadline(-5))
    broken = request_with_deadline(None)
    broken.deadline.seconds = 10**12  # beyond year 9999
    with pytest.raises(InvalidDeadline):
        seconds_left(broken)


def test_a_failure_after_routing_carries_the_model_and_version() -> None:
    request = request_with_deadline(None)
    failed = query_failed(
        request,
        reason=FailureReason.FAILURE_REASON_UNAVAILABLE,
        detail="x" * 2000,
        stage="generator",
        model_name="gemma",
        model_version="2",
    )
    assert (failed.model_name, failed.model_version) == ("gemma", "2")
    assert failed.reason == FailureReason.FAILURE_REASON_UNAVAILABLE and failed.failed_stage == "generator"
    assert len(failed.detail) == 1000
    assert (failed.meta.correlation_id, failed.meta.tenant_id) == (request.meta.correlation_id, "acme")
    assert failed.meta.event_id != request.meta.event_id
    before_routing = query_failed(
        request, reason=FailureReason.FAILURE_REASON_INVALID_ARGUMENT, detail="", stage="x"
    )
    assert (before_routing.model_name, before_routing.model_version) == ("", "")
