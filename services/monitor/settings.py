"""Settings of the monitor service (environment prefix LLMOPS_MONITOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_MONITOR_", extra="ignore")

    service_name: str = Field(default="monitor", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50055, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9105, description="Prometheus /metrics port.")
