"""Settings of the embedder service (environment prefix LLMOPS_EMBEDDER_)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, TritonSettings
from shared.tenants import TenantSettings


class EmbedderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_EMBEDDER_", extra="ignore")

    service_name: str = Field(default="embedder", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50052, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9102, description="Prometheus /metrics port.")
    backend: Literal["onnx", "torch", "triton"] = Field(
        default="onnx",
        description="Embedding runtime: ONNX Runtime (faster on CPU), PyTorch, or the Triton-served "
        "model (minilm_embed; GPUs in production).",
    )
    triton: TritonSettings = Field(default_factory=TritonSettings, description="Triton, for backend=triton.")
    triton_model: str = Field(default="minilm_embed", description="Triton model name for backend=triton.")
    batch_size: int = Field(default=64, description="Texts per model call.")
    chunk_tokens: int = Field(
        default=200, description="Model tokens per chunk (the model reads 256 at most)."
    )
    overlap_tokens: int = Field(default=32, description="Tokens shared by consecutive chunks.")
    max_document_bytes: int = Field(default=10 * 1024 * 1024, description="Larger documents are rejected.")
    max_batch_records: int = Field(
        default=32, description="Kafka records handled together; their texts are embedded in shared batches."
    )
    max_question_chars: int = Field(default=4000, description="Longer questions are rejected.")
    tenants: TenantSettings = Field(default_factory=TenantSettings, description="Tenants served.")
