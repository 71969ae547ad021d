"""Settings of the generator service (environment prefix LLMOPS_GENERATOR_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, TritonSettings
from shared.tenants import TenantSettings

DEFAULT_ROUTING = '{"default": {"model": "tiny_llm", "version": ""}, "pinned": {}, "canary": []}'


class GeneratorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_GENERATOR_", extra="ignore")

    service_name: str = Field(default="generator", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50054, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9104, description="Prometheus /metrics port.")
    triton: TritonSettings = Field(default_factory=TritonSettings, description="Triton connection.")
    tenants: TenantSettings = Field(default_factory=TenantSettings, description="Tenants served.")
    routing_policy: str = Field(
        default=DEFAULT_ROUTING,
        description="RoutingPolicy as JSON: default model/version, per-tenant pins, weighted canary split.",
    )
    follow_rollouts: bool = Field(
        default=True,
        description="Apply the finetune's ModelVersionPromoted and ModelVersionRolledBack events to routing.",
    )
    rollout_catch_up_timeout_s: float = Field(
        default=15.0,
        description="At start, how long generation waits for the rollout topics to be read to their end.",
    )
    default_template: str = Field(
        default="grounded_qa", description="Prompt template when a request names none."
    )
    context_budget_tokens: int = Field(
        default=1500, description="Tokens of retrieved context packed into a prompt."
    )
    request_timeout_s: float = Field(
        default=30.0, description="Deadline for a request that carries none (retries included)."
    )
    sampling_parameters: str = Field(
        default="{}",
        description="JSON merged into every request's sampling_parameters (e.g. top_p, repetition_penalty).",
    )
    max_batch_records: int = Field(
        default=16, description="Kafka records taken together; generated concurrently."
    )
