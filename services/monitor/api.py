"""The monitor's gRPC API: ops queries over its ClickHouse tables (llmops.monitor.v1.MonitorService)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as pb_grpc

from services.monitor.store import StoreRunner, Window
from shared.clickhouse import ClickHouseUnavailable

T = TypeVar("T")

DEFAULT_WINDOW_MS = 3600 * 1000
MAX_LIMIT = 1000
STATUS = {"answered": pb.REQUEST_STATUS_ANSWERED, "failed": pb.REQUEST_STATUS_FAILED}


class InvalidRequest(ValueError):
    """The request cannot be answered as asked (INVALID_ARGUMENT)."""


def window_of(tenant_id: str, window: pb.TimeWindow, *, now_ms: int | None = None) -> Window:
    """[start, end) in epoch ms: end defaults to now, start to one hour before end."""
    if not tenant_id:
        raise InvalidRequest("tenant_id is required")
    end_ms = window.end.ToMilliseconds() if window.HasField("end") else (now_ms or int(time.time() * 1000))
    start_ms = window.start.ToMilliseconds() if window.HasField("start") else end_ms - DEFAULT_WINDOW_MS
    if start_ms >= end_ms:
        raise InvalidRequest("window.start must be before window.end")
    return Window(tenant_id, start_ms, end_ms)


def _limit(value: int, default: int) -> int:
    return min(value or default, MAX_LIMIT)


def _bucket(value: int, default: int) -> int:
    if value and value < 1:
        raise InvalidRequest("bucket_seconds must be positive")
    return value or default


def _timestamp_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def _timestamp_s(seconds: int) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(seconds))
    return ts


def record(row: dict[str, Any]) -> pb.RequestRecord:
    message = pb.RequestRecord(
        correlation_id=row["correlation_id"],
        event_id=row["event_id"],
        tenant_id=row["tenant_id"],
        occurred_at=_timestamp_ms(row["occurred_ms"]),
        status=STATUS.get(row["status"], pb.REQUEST_STATUS_UNSPECIFIED),
        question=row["question"],
        answer=row["answer"],
        redaction=row["redaction"],
        model_name=row["model_name"],
        model_version=row["model_version"],
        prompt_template_id=row["prompt_template_id"],
        prompt_template_version=row["prompt_template_version"],
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        stage_ms={str(k): float(v) for k, v in (row["stage_ms"] or {}).items()},
        total_ms=float(row["total_ms"]),
        chunk_ids=list(row["chunk_ids"]),
        chunk_scores=[float(s) for s in row["chunk_scores"]],
        error_reason=row["error_reason"],
        error_detail=row["error_detail"],
        failed_stage=row["failed_stage"],
    )
    if row["groundedness"] is not None:
        message.groundedness = float(row["groundedness"])
    return message


class MonitorServicer(pb_grpc.MonitorServiceServicer):
    def __init__(self, runner: StoreRunner) -> None:
        self.runner = runner

    async def _read(self, context: grpc.aio.ServicerContext[Any, Any], read: Callable[[], Awaitable[T]]) -> T:
        try:
            return await read()
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ClickHouseUnavailable as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"ClickHouse unavailable: {exc}")

    async def ListRequests(
        self, request: pb.ListRequestsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRequestsResponse:
        async def read() -> pb.ListRequestsResponse:
            window = window_of(request.tenant_id, request.window)
            limit = _limit(request.limit, 100)
            rows = await self.runner.run(
                lambda s: s.list_requests(window, correlation_id=request.correlation_id, limit=limit)
            )
            return pb.ListRequestsResponse(requests=[record(r) for r in rows])

        return await self._read(context, read)

    async def GetLatency(
        self, request: pb.GetLatencyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetLatencyResponse:
        async def read() -> pb.GetLatencyResponse:
            window = window_of(request.tenant_id, request.window)
            rows = await self.runner.run(lambda s: s.latency(window))
            return pb.GetLatencyResponse(
                stages=[
                    pb.StageLatency(
                        stage=r["stage"], count=r["count"], p50_ms=r["p50"], p95_ms=r["p95"], p99_ms=r["p99"]
                    )
                    for r in rows
                ]
            )

        return await self._read(context, read)

    async def GetTraffic(
        self, request: pb.GetTrafficRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTrafficResponse:
        async def read() -> pb.GetTrafficResponse:
            window = window_of(request.tenant_id, request.window)
            bucket = _bucket(request.bucket_seconds, 60)
            data = await self.runner.run(lambda s: s.traffic(window, bucket_s=bucket))
            return traffic_response(data, window)

        return await self._read(context, read)

    async def GetGroundednessTrend(
        self, request: pb.GetGroundednessTrendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetGroundednessTrendResponse:
        async def read() -> pb.GetGroundednessTrendResponse:
            window = window_of(request.tenant_id, request.window)
            bucket = _bucket(request.bucket_seconds, 300)
            rows = await self.runner.run(lambda s: s.groundedness_trend(window, bucket_s=bucket))
            return pb.GetGroundednessTrendResponse(
                buckets=[
                    pb.GroundednessBucket(
                        start=_timestamp_s(r["start_s"]), scored=r["scored"], mean=r["mean"], min=r["min"]
                    )
                    for r in rows
                ]
            )

        return await self._read(context, read)

    async def ListWorstGrounded(
        self, request: pb.ListWorstGroundedRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListWorstGroundedResponse:
        async def read() -> pb.ListWorstGroundedResponse:
            window = window_of(request.tenant_id, request.window)
            limit = _limit(request.limit, 10)
            rows = await self.runner.run(lambda s: s.worst_grounded(window, limit=limit))
            return pb.ListWorstGroundedResponse(requests=[record(r) for r in rows])

        return await self._read(context, read)

    async def GetFeedbackSummary(
        self, request: pb.GetFeedbackSummaryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetFeedbackSummaryResponse:
        async def read() -> pb.GetFeedbackSummaryResponse:
            window = window_of(request.tenant_id, request.window)
            data = await self.runner.run(lambda s: s.feedback_summary(window))
            return feedback_response(data)

        return await self._read(context, read)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, detail: str) -> NoReturn:
    await context.abort(code, detail)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


def _counts(c: dict[str, Any]) -> pb.FeedbackCounts:
    return pb.FeedbackCounts(
        total=c["total"],
        up=c["up"],
        down=c["down"],
        mean_rating=c["mean_rating"],
        rated=c["rated"],
        corrections=c["corrections"],
    )


def feedback_response(data: dict[str, Any]) -> pb.GetFeedbackSummaryResponse:
    return pb.GetFeedbackSummaryResponse(
        total=_counts(data["total"]),
        models=[
            pb.ModelFeedback(
                model_name=m["model_name"],
                model_version=m["model_version"],
                prompt_template_version=m["prompt_template_version"],
                counts=_counts(m),
            )
            for m in data["models"]
        ],
    )


def traffic_response(data: dict[str, Any], window: Window) -> pb.GetTrafficResponse:
    buckets = data["buckets"]
    requests = sum(b["requests"] for b in buckets)
    failed = sum(b["failed"] for b in buckets)
    answered = sum(b["answered"] for b in buckets)
    empty = sum(b["empty"] for b in buckets)
    seconds = (window.end_ms - window.start_ms) / 1000
    return pb.GetTrafficResponse(
        buckets=[
            pb.TrafficBucket(
                start=_timestamp_s(b["start_s"]),
                requests=b["requests"],
                failed=b["failed"],
                prompt_tokens=b["prompt_tokens"],
                completion_tokens=b["completion_tokens"],
            )
            for b in buckets
        ],
        requests=requests,
        failed=failed,
        error_rate=failed / requests if requests else 0.0,
        requests_per_second=requests / seconds if seconds > 0 else 0.0,
        prompt_tokens=sum(b["prompt_tokens"] for b in buckets),
        completion_tokens=sum(b["completion_tokens"] for b in buckets),
        models=[
            pb.ModelTokens(
                model_name=m["model_name"],
                model_version=m["model_version"],
                requests=m["requests"],
                prompt_tokens=m["prompt_tokens"],
                completion_tokens=m["completion_tokens"],
                failed=m["failed"],
                error_rate=m["failed"] / m["requests"] if m["requests"] else 0.0,
            )
            for m in data["models"]
        ],
        failures_by_reason=data["failures"],
        empty_retrieval_rate=empty / answered if answered else 0.0,
    )
