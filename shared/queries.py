"""Helpers every stage of the query path shares: deadlines, reply topics and the failure reply."""

from __future__ import annotations

import asyncio
import logging
import re

from faststream.kafka import KafkaBroker
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.query.v1.events_pb2 import QueryFailed, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason

from shared.bus import publish_event
from shared.errors import PermanentError
from shared.events import follow_meta
from shared.topics import QUERY_FAILED

log = logging.getLogger(__name__)

# Kafka's rule for topic names; anything else makes the producer wait out its metadata timeout.
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# A reply topic that does not exist stalls a send for the producer's request timeout (40 s); the
# reply is on its catalog topic already, so a stage gives up on the reply topic sooner.
REPLY_TOPIC_TIMEOUT_S = 5.0


class InvalidReplyTopic(PermanentError):
    """The request names a reply topic Kafka cannot have."""


def valid_topic_name(name: str) -> bool:
    return bool(TOPIC_NAME.fullmatch(name)) and name not in {".", ".."}


def check_reply_topic(request: QueryRequested) -> None:
    """InvalidReplyTopic (a PermanentError) unless the reply topic is empty or a legal topic name."""
    if request.reply_topic and not valid_topic_name(request.reply_topic):
        raise InvalidReplyTopic(f"reply_topic {request.reply_topic[:80]!r} is not a legal Kafka topic name")


class InvalidDeadline(PermanentError):
    """The request's deadline is not a valid timestamp."""


def seconds_left(request: QueryRequested) -> float | None:
    """Seconds until the request's deadline (0 once passed); None when it carries no deadline.
    InvalidDeadline (a PermanentError) when the deadline is no valid timestamp."""
    if not request.HasField("deadline"):
        return None
    now = Timestamp()
    now.GetCurrentTime()
    try:
        deadline_ns = request.deadline.ToNanoseconds()
    except ValueError as exc:
        raise InvalidDeadline(f"deadline is not a valid timestamp: {exc}") from None
    return max(deadline_ns - now.ToNanoseconds(), 0) / 1e9


def deadline_passed(request: QueryRequested) -> bool:
    """True when the request carries a deadline that is already behind us (InvalidDeadline when the
    deadline is no valid timestamp)."""
    return seconds_left(request) == 0.0


def query_failed(
    request: QueryRequested,
    *,
    reason: FailureReason,
    detail: str,
    stage: str,
    model_name: str = "",
    model_version: str = "",
) -> QueryFailed:
    """The failure of `request` at `stage` (detail bounded to 1,000 characters). A failure after routing
    chose a model names it, so error rates can be read per model version."""
    return QueryFailed(
        meta=follow_meta(request.meta, producer=stage),
        reason=reason,
        detail=detail[:1000],
        failed_stage=stage,
        model_name=model_name,
        model_version=model_version,
    )


async def publish_query_failed(
    broker: KafkaBroker,
    request: QueryRequested,
    *,
    reason: FailureReason,
    detail: str,
    stage: str,
    model_name: str = "",
    model_version: str = "",
) -> QueryFailed:
    """Answer the caller with a failure: on llmops.query.failed.v1 and on its reply topic, if any."""
    failed = query_failed(
        request,
        reason=reason,
        detail=detail,
        stage=stage,
        model_name=model_name,
        model_version=model_version,
    )
    await publish_reply(broker, QUERY_FAILED.name, request, failed)
    return failed


async def publish_reply(broker: KafkaBroker, topic: str, request: QueryRequested, event: Message) -> None:
    """Publish a reply to its catalog topic (what the monitor reads) and to the request's reply topic."""
    key = request.meta.correlation_id
    await publish_event(broker, topic, event, key=key)
    reply_topic = request.reply_topic
    if not reply_topic or reply_topic == topic:
        return
    if not valid_topic_name(reply_topic):
        return  # refused where the request came in (check_reply_topic); never stall on it here
    try:
        await asyncio.wait_for(publish_event(broker, reply_topic, event, key=key), REPLY_TOPIC_TIMEOUT_S)
    except TimeoutError:
        log.warning("reply topic %r unavailable; the reply stays on %s", reply_topic, topic)
