"""Settings of the retriever service (environment prefix LLMOPS_RETRIEVER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, WeaviateSettings
from shared.tenants import TenantSettings
from shared.topics import CHUNKS_EMBEDDED


class RetrieverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_RETRIEVER_", extra="ignore")

    service_name: str = Field(default="retriever", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50053, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9103, description="Prometheus /metrics port.")
    weaviate: WeaviateSettings = Field(default_factory=WeaviateSettings, description="Weaviate connection.")
    tenants: TenantSettings = Field(default_factory=TenantSettings, description="Tenants served.")
    default_top_k: int = Field(default=5, description="Chunks returned when a request names no top_k.")
    default_alpha: float = Field(
        default=0.5, description="Hybrid weight when a request names none (1 = vector)."
    )
    search_retry_cap_s: float = Field(
        default=120.0,
        description="A search retries Weaviate until its request's deadline, but never longer than this "
        "(a consumer must poll again within max.poll.interval.ms, 300 s by default).",
    )
    max_batch_records: int = Field(default=32, description="Kafka records handled together.")
    deletion_record_retention_s: float = Field(
        default=CHUNKS_EMBEDDED.retention_ms / 1000 + 86_400,
        description="How long a delete record is kept (it refuses the chunks of ingests requested before "
        "the delete): the retention of llmops.ingest.chunks-embedded.v1 plus a day, so late chunks still on "
        "that topic meet it.",
    )
