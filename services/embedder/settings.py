"""Settings of the embedder service (environment prefix LLMOPS_EMBEDDER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_EMBEDDER_", extra="ignore")

    service_name: str = Field(default="embedder", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50052, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9102, description="Prometheus /metrics port.")
