"""Settings of the gateway service (environment prefix LLMOPS_GATEWAY_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_GATEWAY_", extra="ignore")

    service_name: str = Field(default="gateway", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50051, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9101, description="Prometheus /metrics port.")
