"""The gateway's QueryService and FeedbackService.

A query becomes a QueryRequested event (keyed by a fresh correlation id, carrying the call's
deadline) and the caller waits for the reply events in its inbox. The caller learns the correlation
id from the `x-correlation-id` initial metadata and from the ErrorInfo of a failed call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.query.v1.events_pb2 import GenerationChunk, QueryAnswered, QueryFailed, QueryRequested
from llmops.query.v1.query_pb2 import FailureReason
from prometheus_client import Counter, Gauge

from services.gateway import domain
from services.gateway.auth import Caller
from services.gateway.replies import PendingReplies
from services.gateway.settings import GatewaySettings
from shared.bus import publish_event
from shared.grpc_errors import abort
from shared.service import ServiceRuntime
from shared.topics import FEEDBACK_RECORDED, QUERY_REQUESTED

CORRELATION_HEADER = "x-correlation-id"

QUERIES = Counter("llmops_gateway_queries", "Queries by RPC and final status code.", ["rpc", "code"])
INFLIGHT = Gauge("llmops_gateway_queries_inflight", "Queries waiting for their answer on the bus.")

QueryCall = query_pb.QueryRequest | query_pb.QueryStreamRequest


class QueryServicer(query_grpc.QueryServiceServicer):
    def __init__(
        self, runtime: ServiceRuntime, settings: GatewaySettings, pending: PendingReplies, caller: Caller
    ) -> None:
        self.broker = runtime.broker
        self.settings = settings
        self.pending = pending
        self.caller = caller
        self.limits = domain.QueryLimits(
            max_question_chars=settings.max_question_chars,
            max_top_k=settings.max_top_k,
            max_tokens=settings.max_tokens,
        )
        self.limiter = domain.InflightLimiter(settings.max_inflight_per_tenant)

    async def Query(
        self, request: query_pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> query_pb.QueryResponse:
        answer: QueryAnswered | None = None
        async with aclosing(self._answer("Query", request, context, stream=False)) as replies:
            async for reply in replies:  # to the end, so the call's accounting finishes before we return
                if isinstance(reply, QueryAnswered):
                    answer = reply
        assert answer is not None, "an answer stream ends with the answer or an abort"
        return domain.query_response(answer)

    async def QueryStream(
        self, request: query_pb.QueryStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[query_pb.QueryStreamResponse]:
        async with aclosing(self._answer("QueryStream", request, context, stream=True)) as replies:
            async for reply in replies:
                if isinstance(reply, QueryAnswered):
                    yield query_pb.QueryStreamResponse(final=domain.query_response(reply))
                else:
                    yield query_pb.QueryStreamResponse(token=reply)

    async def _answer(
        self, rpc: str, request: QueryCall, context: grpc.aio.ServicerContext, *, stream: bool
    ) -> AsyncGenerator[str | QueryAnswered]:
        """Ask on the bus, then yield the answer's pieces in order (when streaming) and the final answer."""
        code = grpc.StatusCode.OK
        try:
            query, timeout_s = await self._admit(request, context, stream=stream)
            correlation_id = query.meta.correlation_id
            inbox = self.pending.expect(correlation_id)
            try:
                await self._publish(query, context)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout_s
                assembler = domain.StreamAssembler()
                final: QueryAnswered | None = None
                while final is None or not assembler.complete(final):
                    if final is not None and loop.time() >= deadline:
                        break  # the final answer holds the whole text: stop waiting for stray chunks
                    reply = await self._next(inbox, deadline - loop.time(), context, correlation_id, final)
                    if reply is None:
                        break
                    if isinstance(reply, QueryFailed):
                        await self._fail(reply, context)
                    elif isinstance(reply, GenerationChunk):
                        text = assembler.accept(reply)
                        if text is not None:
                            yield text
                    elif isinstance(reply, QueryAnswered) and final is None:
                        if not stream:
                            yield reply
                            return
                        final = reply
                        deadline = min(deadline, loop.time() + self.settings.stream_tail_grace_s)
                assert final is not None  # the loop ends only once the final answer is held
                yield final
            finally:
                self._release(query)
        except BaseException as exc:
            code = _code_of(exc, context)
            raise
        finally:
            QUERIES.labels(rpc, code.name).inc()

    async def _admit(
        self, request: QueryCall, context: grpc.aio.ServicerContext, *, stream: bool
    ) -> tuple[QueryRequested, float]:
        """Authenticate, validate and take an in-flight slot; the query event and its timeout."""
        tenant = await self.caller.tenant(context)
        problems = domain.validate_query(request.question, request.retrieval, request.max_tokens, self.limits)
        if problems:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems), reason="INVALID_QUERY"
            )
        remaining = context.time_remaining()
        timeout_s = self.settings.default_query_timeout_s
        if remaining is not None:
            timeout_s = min(remaining - self.settings.deadline_reply_margin_s, timeout_s)
        if timeout_s < self.settings.min_query_deadline_s:
            await abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline in {timeout_s * 1000:.0f} ms is shorter than the "
                f"{self.settings.min_query_deadline_s * 1000:.0f} ms a query needs",
                reason="DEADLINE_TOO_SHORT",
            )
        query = domain.query_requested(
            tenant_id=tenant,
            question=request.question,
            retrieval=request.retrieval,
            prompt_template_id=request.prompt_template_id,
            max_tokens=request.max_tokens,
            timeout_s=timeout_s,
            stream=stream,
        )
        await context.send_initial_metadata(((CORRELATION_HEADER, query.meta.correlation_id),))
        if not self.limiter.try_acquire(tenant):  # last step: nothing after it can fail before `_release`
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"tenant {tenant!r} already has {self.limiter.limit} queries in flight",
                reason="TOO_MANY_QUERIES",
            )
        INFLIGHT.inc()
        return query, timeout_s

    def _release(self, query: QueryRequested) -> None:
        self.pending.forget(query.meta.correlation_id)
        self.limiter.release(query.meta.tenant_id)
        INFLIGHT.dec()

    async def _publish(self, query: QueryRequested, context: grpc.aio.ServicerContext) -> None:
        try:
            await publish_event(self.broker, QUERY_REQUESTED.name, query, key=query.meta.correlation_id)
        except Exception as exc:  # the bus refused or timed out: nothing was asked
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"could not publish the query: {exc}",
                reason="BUS_UNAVAILABLE",
                correlation_id=query.meta.correlation_id,
            )

    async def _next(
        self,
        inbox: asyncio.Queue[Any],
        timeout_s: float,
        context: grpc.aio.ServicerContext,
        correlation_id: str,
        final: QueryAnswered | None = None,
    ) -> Any:
        """The next reply event; DEADLINE_EXCEEDED when none comes in time (None once a final is held)."""
        try:
            return await asyncio.wait_for(inbox.get(), max(timeout_s, 0.0))
        except TimeoutError:
            if final is not None:
                return None
            await abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "no answer before the deadline",
                reason="DEADLINE_EXCEEDED",
                correlation_id=correlation_id,
            )

    async def _fail(self, failed: QueryFailed, context: grpc.aio.ServicerContext) -> None:
        await abort(
            context,
            domain.status_for(failed.reason),
            f"{failed.failed_stage}: {failed.detail}",
            reason=FailureReason.Name(failed.reason),
            correlation_id=failed.meta.correlation_id,
            failed_stage=failed.failed_stage,
        )


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the caller went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class FeedbackServicer(feedback_grpc.FeedbackServiceServicer):
    def __init__(self, runtime: ServiceRuntime, settings: GatewaySettings, caller: Caller) -> None:
        self.broker = runtime.broker
        self.settings = settings
        self.caller = caller

    async def SubmitFeedback(
        self, request: feedback_pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> feedback_pb.SubmitFeedbackResponse:
        tenant = await self.caller.tenant(context)
        problems = domain.validate_feedback(request, self.settings.max_feedback_chars)
        if problems:
            await abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems), reason="INVALID_FEEDBACK"
            )
        event = domain.feedback_recorded(tenant, request)
        try:
            await publish_event(self.broker, FEEDBACK_RECORDED.name, event, key=request.correlation_id)
        except Exception as exc:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"could not record feedback: {exc}",
                reason="BUS_UNAVAILABLE",
            )
        return feedback_pb.SubmitFeedbackResponse(event_id=event.meta.event_id)
