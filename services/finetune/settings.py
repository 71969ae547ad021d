"""Settings of the finetune service (environment prefix LLMOPS_FINETUNE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class FinetuneSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_FINETUNE_", extra="ignore")

    service_name: str = Field(default="finetune", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50056, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9106, description="Prometheus /metrics port.")
