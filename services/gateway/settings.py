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
    default_query_timeout_s: float = Field(
        default=30.0,
        description="Deadline of a query whose caller sets none (and the most a caller may set).",
    )
    min_query_deadline_s: float = Field(
        default=0.05,
        description="Queries whose deadline is nearer than this are refused with DEADLINE_EXCEEDED up front.",
    )
    deadline_reply_margin_s: float = Field(
        default=0.05,
        description="The gateway gives up this long before the caller's deadline, so its DEADLINE_EXCEEDED "
        "(with the correlation id) reaches the caller before the caller's own timer fires.",
    )
    max_question_chars: int = Field(default=4000, description="Longer questions get INVALID_ARGUMENT.")
    max_top_k: int = Field(default=50, description="Largest retrieval.top_k a caller may ask for.")
    max_tokens: int = Field(default=1024, description="Largest max_tokens a caller may ask for.")
    max_inflight_per_tenant: int = Field(
        default=64, description="Queries in flight per tenant and replica; more get RESOURCE_EXHAUSTED."
    )
    stream_tail_grace_s: float = Field(
        default=1.0,
        description="After the final answer, how long a stream waits for chunks still in flight on the bus.",
    )
    max_feedback_chars: int = Field(default=8000, description="Longest correction or comment accepted.")
