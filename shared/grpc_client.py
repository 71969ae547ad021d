"""gRPC client channels that carry the caller's trace context (W3C traceparent in metadata)."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors


def traced_channel(target: str) -> grpc.aio.Channel:
    """An insecure loopback/cluster channel whose calls propagate the current span's context."""
    return grpc.aio.insecure_channel(target, interceptors=aio_client_interceptors())
