"""A test service built on the shared runtime exactly as the platform's services are.

It consumes QueryRequested events from an input topic, records each processing as a row in a
SQLite "effects" table (event id, trace id, pid), and publishes a follow-up QueryRequested to an
output topic: a consume-and-produce hop. Questions steer failure modes:
"permanent:..." raises PermanentError, "transient-once:..." fails transiently on first delivery.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from faststream import FastStream
from faststream.kafka import KafkaMessage
from faststream.middlewares import AckPolicy
from llmops.query.v1.events_pb2 import QueryRequested
from opentelemetry import trace
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.bus import protobuf_decoder, publish_event
from shared.errors import PermanentError, RetryableError
from shared.events import follow_meta
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings


class RelaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_RELAY_", extra="ignore")

    service_name: str = Field(default="relay", description="Name in logs and events.")
    input_topic: str = Field(description="Topic consumed.")
    output_topic: str = Field(default="", description="Topic the follow-up event goes to; empty: none.")
    effects_db: Path = Field(description="SQLite file where each processing is recorded.")
    processing_delay_ms: float = Field(default=0.0, description="Simulated work per event.")


def create_app(settings: RelaySettings) -> FastStream:
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    db = sqlite3.connect(settings.effects_db, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS effects (event_id TEXT, correlation_id TEXT, question TEXT, "
        "trace_id TEXT, traceparent TEXT, pid INTEGER)"
    )
    failed_once: set[str] = set()

    @broker.subscriber(
        settings.input_topic,
        group_id=settings.group_id,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=protobuf_decoder(QueryRequested),
        auto_offset_reset="earliest",
    )
    async def relay(event: QueryRequested) -> None:
        message: KafkaMessage = broker.context.get_local("message")
        if event.question.startswith("permanent:"):
            raise PermanentError(f"question rejected by policy: {event.question!r}")
        if event.question.startswith("transient-once:") and event.meta.event_id not in failed_once:
            failed_once.add(event.meta.event_id)
            raise RetryableError("dependency briefly unavailable")
        if settings.processing_delay_ms:
            await asyncio.sleep(settings.processing_delay_ms / 1000)
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        if settings.output_topic:
            follow = QueryRequested()
            follow.CopyFrom(event)
            follow.meta.CopyFrom(follow_meta(event.meta, producer=settings.service_name))
            await publish_event(broker, settings.output_topic, follow, key=event.meta.correlation_id)
        db.execute(
            "INSERT INTO effects VALUES (?, ?, ?, ?, ?, ?)",
            (
                event.meta.event_id,
                event.meta.correlation_id,
                event.question,
                trace_id,
                message.headers.get("traceparent", ""),
                os.getpid(),
            ),
        )

    return runtime.app()


if __name__ == "__main__":
    asyncio.run(create_app(RelaySettings()).run())  # required fields come from LLMOPS_RELAY_* env
