"""Trace context crosses gRPC: the server-side handler runs in the caller's trace."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from shared.grpc_client import traced_channel
from shared.grpc_server import start_grpc_server

pytestmark = pytest.mark.integration

METHOD = "/llmops.test.v1.TraceProbeService/Probe"


async def probe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return format(trace.get_current_span().get_span_context().trace_id, "032x").encode()


def add_probe(servicer: object, server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(probe)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("llmops.test.v1.TraceProbeService", {"Probe": handler})]
    )


async def test_server_handler_sees_the_callers_trace_id() -> None:
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    endpoint = await start_grpc_server(
        "127.0.0.1", 0, [(add_probe, None, "llmops.test.v1.TraceProbeService")]
    )
    try:
        async with traced_channel(f"127.0.0.1:{endpoint.port}") as channel:
            call = channel.unary_unary(METHOD)
            with provider.get_tracer("test").start_as_current_span("caller") as span:
                expected = format(span.get_span_context().trace_id, "032x")
                seen = (await call(b"", timeout=5)).decode()
        assert seen == expected
    finally:
        await endpoint.stop(grace_s=0)
