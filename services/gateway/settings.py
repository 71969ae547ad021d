"""Settings of the gateway service (environment prefix LLMOPS_GATEWAY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.tenants import TenantSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_GATEWAY_", extra="ignore")

    service_name: str = Field(default="gateway", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50051, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9101, description="Prometheus /metrics port.")
    api_keys_file: Path = Field(
        default=Path(".llmops/api-keys.json"),
        description="JSON object: SHA-256 (hex) of each API key -> tenant id; the keys are never stored.",
    )
    tenants: TenantSettings = Field(default_factory=TenantSettings, description="Tenants served.")
    max_document_bytes: int = Field(default=10 * 1024 * 1024, description="Larger documents are rejected.")
    default_wait_s: float = Field(
        default=60.0, description="How long Ingest(wait_indexed) waits when the caller sets no deadline."
    )
