"""The gateway process: the public gRPC API (Query, QueryStream, Ingest, DeleteDocument, Feedback).

Calls become events on the bus; replies come back on the catalog reply topics, which every gateway
replica reads in a consumer group of its own from "now" and hands to the caller waiting for that
correlation id (see replies.PendingReplies).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from faststream import FastStream
from faststream.middlewares import AckPolicy
from google.protobuf.message import Message
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc

from services.gateway.auth import ApiKeys, Caller
from services.gateway.ingest_api import IngestServicer
from services.gateway.query_api import FeedbackServicer, QueryServicer
from services.gateway.replies import PendingReplies
from services.gateway.settings import GatewaySettings
from shared.bus import protobuf_decoder, wait_for_assignment
from shared.grpc_server import Registration
from shared.service import ServiceRuntime
from shared.topics import (
    DOCUMENT_INDEXED,
    GENERATION_CHUNKS,
    INGEST_FAILED,
    QUERY_ANSWERED,
    QUERY_FAILED,
    Topic,
)

REPLY_TOPICS: tuple[Topic, ...] = (
    DOCUMENT_INDEXED,
    INGEST_FAILED,
    QUERY_ANSWERED,
    QUERY_FAILED,
    GENERATION_CHUNKS,
)


def create_app(settings: GatewaySettings | None = None) -> FastStream:
    settings = settings or GatewaySettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    pending = PendingReplies()
    caller = Caller(ApiKeys.load(settings.api_keys_file), settings.tenants.registry())
    # Every gateway replica must see every reply, so each listens in a group of its own, from "now".
    reply_group = f"{settings.group_id}.replies.{uuid.uuid4().hex[:12]}"

    async def deliver(event: Any) -> None:
        pending.deliver(event.meta.correlation_id, event)

    reply_subscribers = []
    for topic in REPLY_TOPICS:
        assert topic.message is not None
        message_type: type[Message] = topic.message
        subscriber = broker.subscriber(
            topic.name,
            group_id=reply_group,
            auto_offset_reset="latest",
            ack_policy=AckPolicy.ACK_FIRST,  # replies only matter to a caller waiting right now
            decoder=protobuf_decoder(message_type),
            title=f"gateway:reply:{topic.name}",
        )
        subscriber(deliver)
        reply_subscribers.append(subscriber)

    async def replies_assigned() -> None:
        for subscriber in reply_subscribers:
            await wait_for_assignment(subscriber)

    def registrations() -> Iterable[Registration]:
        return [
            (
                ingest_grpc.add_IngestServiceServicer_to_server,
                IngestServicer(runtime, settings, pending, caller),
                ingest_pb.DESCRIPTOR.services_by_name["IngestService"].full_name,
            ),
            (
                query_grpc.add_QueryServiceServicer_to_server,
                QueryServicer(runtime, settings, pending, caller),
                query_pb.DESCRIPTOR.services_by_name["QueryService"].full_name,
            ),
            (
                feedback_grpc.add_FeedbackServiceServicer_to_server,
                FeedbackServicer(runtime, settings, caller),
                feedback_pb.DESCRIPTOR.services_by_name["FeedbackService"].full_name,
            ),
        ]

    return runtime.app(grpc_registrations=registrations, before_serving=[replies_assigned])
