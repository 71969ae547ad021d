"""`llmops stats`: what the platform did for a tenant lately, from the monitor's ops API."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.monitor.v1 import monitor_service_pb2 as pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as monitor_grpc

from services.cli.query import CallFailed, describe


def _window(minutes: float) -> pb.TimeWindow:
    now_ns = time.time_ns()
    start, end = Timestamp(), Timestamp()
    start.FromNanoseconds(now_ns - int(minutes * 60e9))
    end.FromNanoseconds(now_ns)
    return pb.TimeWindow(start=start, end=end)


async def stats(
    *, target: str, tenant_id: str, minutes: float = 60.0, worst: int = 3, out: TextIO = sys.stdout
) -> pb.GetTrafficResponse:
    """Print traffic, latency by stage, groundedness, the worst-grounded answers and feedback."""
    window = _window(minutes)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = monitor_grpc.MonitorServiceStub(channel)
        try:
            traffic, latency, trend, worst_grounded, feedback = await asyncio.gather(
                stub.GetTraffic(pb.GetTrafficRequest(tenant_id=tenant_id, window=window), timeout=30),
                stub.GetLatency(pb.GetLatencyRequest(tenant_id=tenant_id, window=window), timeout=30),
                stub.GetGroundednessTrend(
                    pb.GetGroundednessTrendRequest(
                        tenant_id=tenant_id, window=window, bucket_seconds=int(minutes * 6)
                    ),
                    timeout=30,
                ),
                stub.ListWorstGrounded(
                    pb.ListWorstGroundedRequest(tenant_id=tenant_id, window=window, limit=worst), timeout=30
                ),
                stub.GetFeedbackSummary(
                    pb.GetFeedbackSummaryRequest(tenant_id=tenant_id, window=window), timeout=30
                ),
            )
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    w = out.write
    w(f"tenant {tenant_id}, last {minutes:g} min\n\n")
    w(
        f"requests {traffic.requests} ({traffic.requests_per_second:.2f}/s), failed {traffic.failed} "
        f"(error rate {traffic.error_rate:.1%}), empty retrieval {traffic.empty_retrieval_rate:.1%}\n"
    )
    w(f"tokens: prompt {traffic.prompt_tokens}, completion {traffic.completion_tokens}\n")
    for model in traffic.models:
        w(
            f"  {model.model_name} v{model.model_version or '-'}: {model.requests} requests, "
            f"failed {model.failed} (error rate {model.error_rate:.1%})\n"
        )
    for reason, count in sorted(traffic.failures_by_reason.items()):
        w(f"  failed with {reason}: {count}\n")
    w("\nlatency (ms)      count     p50     p95     p99\n")
    for stage in latency.stages:
        percentiles = f"{stage.p50_ms:7.1f} {stage.p95_ms:7.1f} {stage.p99_ms:7.1f}"
        w(f"  {stage.stage:14s} {stage.count:6d} {percentiles}\n")
    scored = [b for b in trend.buckets if b.scored]
    if scored:
        trend_text = "  ".join(f"{b.mean:.2f}" for b in scored)
        w(f"\ngroundedness (mean per bucket, oldest first): {trend_text}\n")
    if worst_grounded.requests:
        w("worst grounded:\n")
        for record in worst_grounded.requests:
            question = record.question[:60] or "(redacted)"
            w(f"  {record.groundedness:.2f}  {record.correlation_id}  {question}\n")
    total = feedback.total
    w(
        f"\nfeedback: {total.total} ({total.up} up, {total.down} down, {total.corrections} corrections"
        + (f", mean rating {total.mean_rating:.1f} of {total.rated}" if total.rated else "")
        + ")\n"
    )
    summary: pb.GetTrafficResponse = traffic
    return summary
