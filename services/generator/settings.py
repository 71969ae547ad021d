"""Settings of the generator service (environment prefix LLMOPS_GENERATOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class GeneratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_GENERATOR_", extra="ignore")

    service_name: str = Field(default="generator", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50054, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9104, description="Prometheus /metrics port.")
