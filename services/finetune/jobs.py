"""Job specifications (pure): training parameters, their parsing, and the spec a runner hands a trainer.

A `JobSpec` is everything a training run needs, as JSON: the runner writes it to a file (local
subprocess) or a ConfigMap (Kubernetes Job), and `python -m services.finetune.train --spec FILE
--result FILE` reads it. Parameters arrive as strings (gRPC map, CLI ``key=value``); `parse_params`
checks names and ranges, so a bad request fails at TriggerJob, not minutes later in the trainer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from services.finetune.evaluation import GateConfig

FAIL_POINTS = ("", "train", "write")


@dataclass(frozen=True)
class TrainingParams:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    learning_rate: float = 1e-2
    epochs: int = 8
    batch_size: int = 4
    max_steps: int = 200
    seed: int = 7
    max_len: int = 320
    max_new_tokens: int = 40
    threads: int = 2
    # Prompt-template versions (id@version, comma-separated) the current model is also evaluated with on
    # the held-out split, beside the fine-tuned candidate: which lever pays (`evaluation.Levers`).
    compare_templates: str = "grounded_qa@v1,grounded_qa@v2"
    # Fault injection for tests and drills: "train" raises after `fail_after_steps` optimizer steps,
    # "write" kills the trainer (os._exit) halfway through writing the artifact.
    fail_at: str = ""
    fail_after_steps: int = 1

    def __post_init__(self) -> None:
        checks = {
            "rank": 1 <= self.rank <= 64,
            "alpha": 1 <= self.alpha <= 512,
            "dropout": 0.0 <= self.dropout < 1.0,
            "learning_rate": 0.0 < self.learning_rate <= 1.0,
            "epochs": 1 <= self.epochs <= 100,
            "batch_size": 1 <= self.batch_size <= 256,
            "max_steps": 1 <= self.max_steps <= 100_000,
            "max_len": 64 <= self.max_len <= 512,
            "max_new_tokens": 1 <= self.max_new_tokens <= 256,
            "threads": 1 <= self.threads <= 64,
            "compare_templates": all(
                len(ref.split("@")) == 2 and all(ref.split("@")) for ref in self.template_refs_raw()
            ),
            "fail_at": self.fail_at in FAIL_POINTS,
            "fail_after_steps": self.fail_after_steps >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"training parameter out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}"
            )

    def template_refs_raw(self) -> list[str]:
        return [ref.strip() for ref in self.compare_templates.split(",") if ref.strip()]

    def template_refs(self) -> list[tuple[str, str]]:
        """(template id, version) of each `compare_templates` entry."""
        return [(ref.split("@")[0], ref.split("@")[1]) for ref in self.template_refs_raw()]

    def as_strings(self) -> dict[str, str]:
        return {
            k: str(v) for k, v in asdict(self).items() if not (k.startswith("fail_") and not self.fail_at)
        }


def parse_params(defaults: TrainingParams, overrides: dict[str, str]) -> TrainingParams:
    """`defaults` with `overrides` (strings) applied; ValueError names an unknown or bad parameter."""
    types = {f.name: f.type for f in fields(TrainingParams)}
    values: dict[str, Any] = {}
    for name, raw in overrides.items():
        if name not in types:
            raise ValueError(f"unknown training parameter {name!r} (known: {', '.join(sorted(types))})")
        kind = {"int": int, "float": float, "str": str}[str(types[name])]
        try:
            values[name] = kind(raw)
        except ValueError:
            raise ValueError(f"training parameter {name}={raw!r} is not a {kind.__name__}") from None
    return replace(defaults, **values)


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    tenant_id: str
    dataset_dir: str
    artifacts_dir: str  # the artifact goes to <artifacts_dir>/<job_id>
    models_dir: str  # where the cached base model lives
    current_adapter: str = ""  # "" means current is the base model itself
    params: TrainingParams = field(default_factory=TrainingParams)
    gate: GateConfig = field(default_factory=GateConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> JobSpec:
        data = json.loads(text)
        data["params"] = TrainingParams(**data.get("params", {}))
        data["gate"] = GateConfig(**data.get("gate", {}))
        return JobSpec(**data)

    @property
    def artifact_dir(self) -> Path:
        return Path(self.artifacts_dir) / self.job_id
