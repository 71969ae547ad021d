"""Settings of the finetune service (environment prefix LLMOPS_FINETUNE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.finetune.canary import CanaryPolicy, check_stages
from services.finetune.curation import CurationPolicy
from services.finetune.evaluation import GateConfig
from services.finetune.jobs import TrainingParams
from services.finetune.triggers import NewExamplesPolicy, QualityAlertPolicy, SchedulePolicy, TriggerPolicies
from shared.infra.paths import cache_dir, default_state_dir
from shared.settings import ServiceSettings, TritonSettings
from shared.tenants import TenantSettings


class FinetuneSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_FINETUNE_", extra="ignore")

    service_name: str = Field(default="finetune", description="Name in logs, metrics, traces and events.")
    grpc_port: int = Field(default=50056, description="gRPC port (health, reflection and the service's API).")
    metrics_port: int = Field(default=9106, description="Prometheus /metrics port.")
    tenants: TenantSettings = Field(
        default_factory=TenantSettings,
        description="Tenants served; events of other tenants are skipped (counted, not stored).",
    )
    max_batch_records: int = Field(default=256, description="Kafka records taken together per batch.")

    # --- where state lives
    data_dir: Path = Field(
        default_factory=lambda: default_state_dir() / "finetune",
        description="Root of the service's state: store.sqlite3, datasets/, artifacts/, jobs/.",
    )
    models_dir: Path = Field(
        default_factory=lambda: cache_dir() / "models" / "finetune",
        description="Cache of the base model artifact (built once, shared by every job and checkout).",
    )
    retention_days: float = Field(
        default=90.0, description="Answers and feedback older than this are forgotten by the store."
    )
    max_context_chunks: int = Field(
        default=3,
        description="Retrieved passages kept per answer (the first ones, as the generator ranked them).",
    )

    # --- curation
    min_accept_rating: int = Field(default=4, description="A rating at or above this accepts an answer.")
    index_approved_interactions: bool = Field(
        default=True,
        description="Publish answers feedback approved (question + approved answer) as documents of "
        "their tenant, so later queries can be grounded in them; a later rejection retracts them.",
    )
    groundedness_threshold: float = Field(
        default=0.8,
        description="Answers without feedback are curated when their groundedness is at least this.",
    )
    sentence_support_threshold: float = Field(
        default=0.6, description="Share of a sentence's content words the context must hold (groundedness)."
    )
    dedup_threshold: float = Field(
        default=0.95, description="Cosine similarity at or above which two examples are near-duplicates."
    )
    dedup_backend: Literal["onnx", "torch", "none"] = Field(
        default="onnx",
        description="Embedder for near-duplicate removal (all-MiniLM-L6-v2); 'none': exact duplicates only.",
    )
    eval_fraction: float = Field(
        default=0.2, description="Share of examples held out for evaluation (by id hash)."
    )
    max_examples: int = Field(default=5000, description="Newest curated examples a dataset keeps at most.")

    # --- triggers
    tick_interval_s: float = Field(default=10.0, description="How often trigger policies are evaluated.")
    min_new_examples: int = Field(
        default=50, description="New curated examples since the last job that start a job (0 disables)."
    )
    alert_signals: str = Field(
        default="groundedness", description="Comma-separated QualityAlert signals that start a job."
    )
    alert_min_examples: int = Field(
        default=10, description="Curated examples a tenant needs before a quality alert starts a job."
    )
    schedule_interval_s: float = Field(
        default=0.0, description="Start a job this often when new examples exist (0 disables the schedule)."
    )
    cooldown_s: float = Field(
        default=3600.0, description="Automatic triggers wait this long after a tenant's last job."
    )

    # --- jobs
    job_timeout_s: float = Field(
        default=3600.0, description="A training run longer than this is killed (failed)."
    )
    train_rank: int = Field(default=8, description="LoRA rank.")
    train_alpha: int = Field(default=16, description="LoRA alpha (scaling = alpha / rank).")
    train_learning_rate: float = Field(default=1e-2, description="AdamW learning rate of the adapter.")
    train_epochs: int = Field(default=8, description="Passes over the training split.")
    train_batch_size: int = Field(default=4, description="Examples per optimizer step.")
    train_max_steps: int = Field(default=200, description="Optimizer steps at most.")
    train_seed: int = Field(default=7, description="Seed of initialisation, shuffling and everything random.")
    train_threads: int = Field(default=2, description="CPU threads the trainer uses.")

    # --- evaluation gate
    gate_primary: Literal["eval_loss", "answer_f1"] = Field(
        default="eval_loss", description="Held-out metric the candidate must improve to be promoted."
    )
    gate_margin: float = Field(
        default=0.02, description="Improvement required on the primary metric (absolute; >= 0)."
    )
    gate_regression_tolerance: float = Field(
        default=0.05, description="How much worse the regression set's primary metric may get."
    )
    gate_max_latency_ratio: float = Field(
        default=3.0, description="Candidate ms/token may be at most this multiple of current's."
    )

    # --- promotion and rollback
    promotion_enabled: bool = Field(
        default=True,
        description="Promote jobs the gate passed and watch their canary (false: jobs end at the gate).",
    )
    model_repository: Path = Field(
        default_factory=lambda: default_state_dir() / "triton-models",
        description="Triton's WRITABLE model repository (not in git) where promoted versions are written.",
    )
    serving_model: str = Field(
        default="tiny_lora_lm",
        description="Triton model whose numbered versions the loop writes (version 1: the base model).",
    )
    triton: TritonSettings = Field(
        default_factory=TritonSettings, description="Triton whose model-control API loads new versions."
    )
    monitor_grpc_url: str = Field(
        default="127.0.0.1:50055", description="The monitor's ops gRPC API (canary vs stable statistics)."
    )
    rollout_scope: Literal["tenant", "all"] = Field(
        default="tenant",
        description="Whose traffic a version fine-tuned on one tenant's data serves: that tenant's only "
        "(its canary, stages and full rollout; other tenants stay on their version), or every tenant's.",
    )
    canary_stages: list[float] = Field(
        default=[0.1, 0.5],
        description="Traffic shares a promoted version goes through, increasing, each in (0, 1) (JSON list); "
        "after the last, the full rollout. [] skips the canary.",
    )
    canary_check_interval_s: float = Field(
        default=30.0, description="How often the canary is compared with stable."
    )
    canary_min_requests: int = Field(
        default=20, description="Requests per version before error rate and groundedness are compared."
    )
    canary_min_feedback: int = Field(
        default=5, description="Feedback events on the canary before feedback is compared (and widening)."
    )
    canary_max_down_share_increase: float = Field(
        default=0.2, description="Rollback when the canary's thumbs-down share exceeds stable's by more."
    )
    canary_max_rating_drop: float = Field(
        default=1.0, description="Rollback when the canary's mean rating is lower than stable's by more."
    )
    canary_min_mean_rating: float = Field(
        default=2.5, description="Rollback below this canary mean rating when stable has no ratings."
    )
    canary_max_groundedness_drop: float = Field(
        default=0.15, description="Rollback when the canary's mean groundedness is lower by more."
    )
    canary_max_error_rate_increase: float = Field(
        default=0.05, description="Rollback when the canary's error rate exceeds stable's by more."
    )
    canary_stage_requests: int = Field(
        default=200,
        description="Canary requests at one share, without a regression, before it is widened to the next.",
    )
    retire_grace_s: float = Field(
        default=30.0, description="A rolled-back version stays loaded this long before it is unloaded."
    )
    model_load_timeout_s: float = Field(
        default=180.0, description="How long Triton may take to load a new version."
    )

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def curation_policy(self) -> CurationPolicy:
        return CurationPolicy(
            min_accept_rating=self.min_accept_rating,
            groundedness_threshold=self.groundedness_threshold,
            dedup_threshold=self.dedup_threshold,
            eval_fraction=self.eval_fraction,
            max_examples=self.max_examples,
        )

    def trigger_policies(self) -> TriggerPolicies:
        return TriggerPolicies(
            quality_alert=QualityAlertPolicy(
                signals=frozenset(s.strip() for s in self.alert_signals.split(",") if s.strip()),
                min_examples=self.alert_min_examples,
            ),
            new_examples=NewExamplesPolicy(self.min_new_examples),
            schedule=SchedulePolicy(self.schedule_interval_s),
            cooldown_s=self.cooldown_s,
        )

    def training_params(self) -> TrainingParams:
        return TrainingParams(
            rank=self.train_rank,
            alpha=self.train_alpha,
            learning_rate=self.train_learning_rate,
            epochs=self.train_epochs,
            batch_size=self.train_batch_size,
            max_steps=self.train_max_steps,
            seed=self.train_seed,
            threads=self.train_threads,
        )

    @field_validator("canary_stages")
    @classmethod
    def _stages_increase_within_0_1(cls, stages: list[float]) -> list[float]:
        return list(check_stages(stages))

    def canary_policy(self) -> CanaryPolicy:
        return CanaryPolicy(
            min_requests=self.canary_min_requests,
            min_feedback=self.canary_min_feedback,
            max_down_share_increase=self.canary_max_down_share_increase,
            max_rating_drop=self.canary_max_rating_drop,
            min_mean_rating=self.canary_min_mean_rating,
            max_groundedness_drop=self.canary_max_groundedness_drop,
            max_error_rate_increase=self.canary_max_error_rate_increase,
            stage_requests=self.canary_stage_requests,
        )

    def gate_config(self) -> GateConfig:
        return GateConfig(
            primary=self.gate_primary,
            margin=self.gate_margin,
            regression_tolerance=self.gate_regression_tolerance,
            max_latency_ratio=self.gate_max_latency_ratio,
        )
