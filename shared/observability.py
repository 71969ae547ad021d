"""Tracing and metrics set-up: OpenTelemetry with W3C trace context, a Prometheus endpoint per service."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server


def configure_tracing(service: str) -> TracerProvider:
    """Install a tracer provider named after the service.

    The default global propagator is W3C TraceContext + Baggage, which is what FastStream's
    telemetry middleware writes to Kafka headers (`traceparent`) and the gRPC interceptors to metadata.
    Exporters are attached by deployment (OTEL_* env with an exporter package); locally spans are
    only propagated, which is what cross-service correlation needs.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": f"llmops-{service}"}))
    trace.set_tracer_provider(provider)
    return provider


def start_metrics_endpoint(host: str, port: int) -> int:
    """Serve Prometheus /metrics; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
