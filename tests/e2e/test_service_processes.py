"""Every service runs as its own process with gRPC health (SERVING) and reflection (issue: foundation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shared.infra.stack import Stack
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SERVICES = ["embedder", "retriever", "generator", "monitor", "finetune", "gateway"]


@pytest.fixture(scope="module")
def running_services(
    kafka: str, weaviate: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
    }
    with platform_services(SERVICES, env, tmp_path_factory.mktemp("services")) as procs:
        yield procs


@pytest.mark.parametrize("name", SERVICES)
async def test_health_reports_serving(running_services: dict[str, ServiceProcess], name: str) -> None:
    async with grpc.aio.insecure_channel(running_services[name].grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", SERVICES)
async def test_reflection_lists_services(running_services: dict[str, ServiceProcess], name: str) -> None:
    async with grpc.aio.insecure_channel(running_services[name].grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        listed = [s.name async for r in responses for s in r.list_services_response.service]
    assert "grpc.health.v1.Health" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed
    assert set(API_SERVICES.get(name, ())) <= set(listed)


# The APIs each service serves, besides health and reflection.
API_SERVICES = {
    "gateway": ["llmops.api.v1.IngestService", "llmops.api.v1.QueryService", "llmops.api.v1.FeedbackService"],
    "embedder": ["llmops.embedding.v1.EmbedderService"],
    "retriever": ["llmops.retrieval.v1.RetrieverService"],
    "monitor": ["llmops.monitor.v1.MonitorService"],
    "finetune": ["llmops.finetune.v1.FineTuneService"],
}


@pytest.mark.parametrize("name", SERVICES)
def test_metrics_endpoint_serves_prometheus_text(
    running_services: dict[str, ServiceProcess], name: str
) -> None:
    import urllib.request

    with urllib.request.urlopen(running_services[name].endpoints["metrics"], timeout=5) as resp:
        body = resp.read().decode()
    assert "llmops_dead_lettered_total" in body or "# HELP" in body
    assert "process_cpu_seconds_total" in body


def test_sigterm_stops_service_cleanly(kafka: str, tmp_path: Path) -> None:
    prefix = "LLMOPS_GATEWAY_"
    env = {"LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka, f"{prefix}GRPC_PORT": "0", f"{prefix}METRICS_PORT": "0"}
    proc = ServiceProcess(
        "gateway-term", ["-m", "services.gateway"], env, tmp_path, env_prefix=prefix
    ).start()
    assert proc.terminate(timeout_s=30) == 0, proc.log_tail()
