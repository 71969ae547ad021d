"""The generator process: grounded answers streamed from Triton, with citations.

It consumes ContextRetrieved in batches and generates the batch's requests concurrently. Per
request: pick the model by the routing policy, pack the context under a token budget with numbered
passages, render the versioned prompt template, stream from Triton (retrying transient failures
within the request's deadline), publish GenerationChunk events when the caller asked for a stream,
then QueryAnswered with the citations the answer uses, token usage, model and template versions and
timings (queue, first_token, generate). A failure past the deadline answers QueryFailed.

The routing policy follows the fine-tune loop: every replica reads llmops.finetune.model-promoted.v1
and llmops.finetune.model-rolled-back.v1 from the earliest offset in a consumer group of its own (so
each rebuilds the same policy after a restart; `RolloutLog` orders the events by time) and applies
the canary share, full rollout or rollback. Generation waits (up to `rollout_catch_up_timeout_s`)
until both topics were read to the end offsets seen at start, so a restarted replica never serves
from a stale policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import ConsumerRecord
from faststream import FastStream
from faststream.kafka import KafkaMessage
from faststream.middlewares import AckPolicy
from llmops.finetune.v1.events_pb2 import ModelVersionPromoted, ModelVersionRolledBack
from llmops.query.v1.events_pb2 import ContextRetrieved
from llmops.query.v1.query_pb2 import FailureReason
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from services.generator import domain
from services.generator.llm import TritonLLM
from services.generator.prompts import TemplateRegistry, approx_token_count, citations_for, pack_context
from services.generator.routing import RolloutEvent, RolloutLog, RoutingPolicy
from services.generator.settings import GeneratorSettings
from shared.bus import concurrently, parse_event, wait_for_assignment
from shared.errors import PermanentError, is_transient
from shared.events import HEADER_EVENT_TYPE
from shared.queries import deadline_passed, publish_query_failed, publish_reply, seconds_left
from shared.service import ServiceRuntime
from shared.topics import (
    CONTEXT_RETRIEVED,
    GENERATION_CHUNKS,
    MODEL_PROMOTED,
    MODEL_ROLLED_BACK,
    QUERY_ANSWERED,
)

log = logging.getLogger(__name__)


@dataclass
class Clients:
    llm: TritonLLM | None = None
    policy: RoutingPolicy | None = None
    templates: TemplateRegistry = field(default_factory=TemplateRegistry)


def _seconds_left(event: ContextRetrieved, default_s: float) -> float:
    """Seconds to the request's deadline, or `default_s` for a request without one."""
    left = seconds_left(event.request)
    return default_s if left is None else left


def rollout_event(record: ConsumerRecord[Any, Any]) -> RolloutEvent:
    """The routing change a record of the promoted or rolled-back topic announces; MalformedEventError
    (dead-lettered with the reason) for a record that is no valid event of the topic."""
    declared = dict(record.headers or ()).get(HEADER_EVENT_TYPE)
    declared_type = declared.decode(errors="replace") if isinstance(declared, bytes) else None
    if record.topic == MODEL_PROMOTED.name:
        promoted = parse_event(record.value, declared_type, ModelVersionPromoted)
        return RolloutEvent(
            event_id=promoted.meta.event_id,
            at_ms=promoted.meta.occurred_at.ToMilliseconds() or record.timestamp,
            kind="promoted",
            model=promoted.model_name,
            version=promoted.model_version,
            traffic_share=promoted.traffic_share,
            tenant=promoted.scope_tenant_id,
            previous=promoted.previous_version,
        )
    rolled_back = parse_event(record.value, declared_type, ModelVersionRolledBack)
    return RolloutEvent(
        event_id=rolled_back.meta.event_id,
        at_ms=rolled_back.meta.occurred_at.ToMilliseconds() or record.timestamp,
        kind="rolled_back",
        model=rolled_back.model_name,
        version=rolled_back.model_version,
        restored=rolled_back.restored_version,
        tenant=rolled_back.scope_tenant_id,
    )


async def _record(msg: KafkaMessage) -> ConsumerRecord[Any, Any]:
    """The record itself (the EventGuard's idempotency skip does not apply: replays must be re-read)."""
    record: ConsumerRecord[Any, Any] = msg.raw_message
    return record


def create_app(settings: GeneratorSettings | None = None) -> FastStream:
    settings = settings or GeneratorSettings()
    runtime = ServiceRuntime(settings)
    broker = runtime.broker
    tenants = settings.tenants.registry()
    clients = Clients(policy=RoutingPolicy.from_json(settings.routing_policy))
    producer = settings.service_name
    extra_sampling = json.loads(settings.sampling_parameters)
    assert clients.policy is not None
    rollouts = RolloutLog(clients.policy)
    rollouts_read: dict[tuple[str, int], int] = {}  # next offset per partition, once applied
    rollouts_caught_up = asyncio.Event()
    if not settings.follow_rollouts:
        rollouts_caught_up.set()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        clients.llm = TritonLLM(settings.triton.grpc_url)
        try:
            yield
        finally:
            await clients.llm.close()

    async def generate_one(
        record: ConsumerRecord[Any, Any], event: ContextRetrieved
    ) -> tuple[Any, Any] | None:
        if not rollouts_caught_up.is_set():
            try:
                await asyncio.wait_for(rollouts_caught_up.wait(), settings.rollout_catch_up_timeout_s)
            except TimeoutError:
                log.warning("rollout topics not read to their end in time; routing with what was read")
                rollouts_caught_up.set()
        assert clients.llm is not None and clients.policy is not None
        request = event.request
        received = time.perf_counter()
        queue_ms = max(time.time() * 1000 - event.meta.occurred_at.ToMilliseconds(), 0.0)
        if deadline_passed(request):
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED,
                detail="deadline passed before generation",
                stage=producer,
            )
            return None
        try:
            tenants.check(event.meta.tenant_id)
            template = clients.templates.get(request.prompt_template_id or settings.default_template)
        except PermanentError as exc:
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_INVALID_ARGUMENT,
                detail=str(exc),
                stage=producer,
            )
            return (record, exc)
        target = clients.policy.choose(event.meta.tenant_id, event.meta.correlation_id)
        context, citations = pack_context(
            event.chunks, budget_tokens=settings.context_budget_tokens, count_tokens=approx_token_count
        )
        prompt = template.render(context, request.question)
        max_tokens = request.max_tokens or template.max_tokens
        pieces: list[str] = []
        first_token_ms: float | None = None
        try:
            # Retries only until the first piece: a stream cut mid-answer is not replayed.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: is_transient(e) and not pieces),
                stop=stop_after_delay(max(_seconds_left(event, settings.request_timeout_s) - 0.2, 0.0)),
                wait=wait_exponential_jitter(initial=0.1, max=2.0),
                reraise=True,
            ):
                with attempt:
                    remaining = _seconds_left(event, settings.request_timeout_s)
                    async for piece in clients.llm.stream(
                        target,
                        prompt,
                        max_tokens=max_tokens,
                        stop=template.stop,
                        timeout_s=max(remaining, 0.1),
                        request_id=event.meta.correlation_id,
                        extra_sampling=extra_sampling,
                    ):
                        if first_token_ms is None:
                            first_token_ms = (time.perf_counter() - received) * 1000
                        if request.stream:
                            chunk = domain.generation_chunk(event, len(pieces), piece, producer=producer)
                            await publish_reply(broker, GENERATION_CHUNKS.name, request, chunk)
                        pieces.append(piece)
        except PermanentError as exc:
            await publish_query_failed(
                broker,
                request,
                reason=FailureReason.FAILURE_REASON_INVALID_ARGUMENT,
                detail=str(exc),
                stage=producer,
                model_name=target.model,
                model_version=target.version,
            )
            return (record, exc)
        except Exception as exc:
            if not is_transient(exc):
                raise
            reason = (
                FailureReason.FAILURE_REASON_DEADLINE_EXCEEDED
                if _seconds_left(event, settings.request_timeout_s) <= 0.2
                else FailureReason.FAILURE_REASON_UNAVAILABLE
            )
            await publish_query_failed(
                broker,
                request,
                reason=reason,
                detail=f"generation on {target.model} unavailable after retries: {exc}",
                stage=producer,
                model_name=target.model,
                model_version=target.version,
            )
            return None
        answer = "".join(pieces).strip()
        answered = domain.query_answered(
            event,
            answer=answer,
            citations=citations_for(answer, citations, {c.chunk_id: c.text for c in event.chunks}),
            template=template,
            target=target,
            prompt_tokens=approx_token_count(prompt),
            completion_tokens=len(pieces),
            timings_ms={
                "queue": queue_ms,
                "first_token": first_token_ms or 0.0,
                "generate": (time.perf_counter() - received) * 1000,
            },
            producer=producer,
        )
        await publish_reply(broker, QUERY_ANSWERED.name, request, answered)
        return None

    runtime.consume_batches(
        CONTEXT_RETRIEVED.name,
        ContextRetrieved,
        concurrently(generate_one),
        max_records=settings.max_batch_records,
        title="generator:generate",
    )

    async def on_rollout(record: ConsumerRecord[Any, Any]) -> None:
        try:
            event = rollout_event(record)
        finally:  # read, even when it is dead-lettered as undecodable
            rollouts_read[(record.topic, record.partition)] = record.offset + 1
        if rollouts.add(event):
            clients.policy = rollouts.policy
            log.info(
                "routing policy changed",
                extra={
                    "event": event.kind,
                    "model": event.model,
                    "version": event.version,
                    "traffic_share": event.traffic_share,
                    "policy": rollouts.policy.to_json(),
                },
            )

    rollout_subscribers: list[Any] = []
    if settings.follow_rollouts:
        # A group of its own per replica, from the earliest offset: every replica sees every event.
        rollout_group = f"{settings.group_id}.rollouts.{uuid.uuid4().hex[:12]}"
        for topic in (MODEL_PROMOTED, MODEL_ROLLED_BACK):
            subscriber = broker.subscriber(
                topic.name,
                group_id=rollout_group,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.ACK_FIRST,  # the log is re-read from the start by each new group
                decoder=_record,
                title=f"generator:rollouts:{topic.name}",
            )
            subscriber(on_rollout)
            rollout_subscribers.append(subscriber)

    async def catch_up_rollouts() -> None:
        """Wait until the rollout topics were applied up to their end offsets seen now."""
        if not rollout_subscribers:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.rollout_catch_up_timeout_s
        try:
            ends: dict[tuple[str, int], int] = {}
            for subscriber in rollout_subscribers:
                await wait_for_assignment(subscriber, timeout_s=settings.rollout_catch_up_timeout_s)
                consumer = subscriber.consumer
                offsets = await consumer.end_offsets(list(consumer.assignment()))
                ends.update({(tp.topic, tp.partition): end for tp, end in offsets.items()})
            while loop.time() < deadline:
                if all(rollouts_read.get(tp, 0) >= end for tp, end in ends.items()):
                    break
                await asyncio.sleep(0.05)
            else:
                log.warning("rollout topics not read to their end in time", extra={"ends": str(ends)})
        except Exception:
            log.exception("reading the rollout topics failed; routing with the configured policy")
        finally:
            rollouts_caught_up.set()
            log.info(
                "rollout events applied",
                extra={"events": len(rollouts), "policy": rollouts.policy.to_json()},
            )

    return runtime.app(lifespan=lifespan, before_serving=[catch_up_rollouts])
