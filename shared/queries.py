"""Helpers every stage of the query path shares: deadlines and the failure reply."""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.query.v1.events_pb2 import QueryFailed, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from shared.bus import publish_event
from shared.events import follow_meta
from shared.topics import QUERY_FAILED


def deadline_passed(request: QueryRequested) -> bool:
    """True when the request carries a deadline that is already behind us."""
    if not request.HasField("deadline"):
        return False
    now = Timestamp()
    now.GetCurrentTime()
    return bool(request.deadline.ToNanoseconds() <= now.ToNanoseconds())


async def publish_query_failed(
    broker: KafkaBroker,
    request: QueryRequested,
    *,
    reason: FailureReason,
    detail: str,
    stage: str,
) -> QueryFailed:
    """Answer the caller with a failure: on llmops.query.failed.v1 and on its reply topic, if any."""
    failed = QueryFailed(
        meta=follow_meta(request.meta, producer=stage),
        reason=reason,
        detail=detail[:1000],
        failed_stage=stage,
    )
    await publish_reply(broker, QUERY_FAILED.name, request, failed)
    return failed


async def publish_reply(broker: KafkaBroker, topic: str, request: QueryRequested, event: Message) -> None:
    """Publish a reply to its catalog topic (what the monitor reads) and to the request's reply topic."""
    key = request.meta.correlation_id
    await publish_event(broker, topic, event, key=key)
    if request.reply_topic and request.reply_topic != topic:
        await publish_event(broker, request.reply_topic, event, key=key)
