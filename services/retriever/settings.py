"""Settings of the retriever service (environment prefix LLMOPS_RETRIEVER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RetrieverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_RETRIEVER_", extra="ignore")

    service_name: str = Field(default="retriever", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50053, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9103, description="Prometheus /metrics port.")
