"""The training run: `python -m services.finetune.train --spec SPEC.json --result RESULT.json`.

1. Loads (or builds once) the cached base model and the dataset version's train and eval splits.
2. Fine-tunes a LoRA adapter (PEFT, on the attention and MLP projections) with fixed seeds and
   deterministic algorithms, on CPU, for `epochs` passes (at most `max_steps` optimizer steps).
3. Evaluates candidate (base + adapter) against current (the base, or base + the current adapter) on the
   held-out split and the fixed regression set, and applies the promotion gate.
4. Writes the artifact (adapter weights and config, ``metrics.json``, ``job.json``) to a temporary
   folder beside `<artifacts_dir>/<job_id>`, fsyncs it and renames it into place: the artifact is
   complete or absent, never half-written.
5. Writes the result (metrics, gate decision, artifact path; or the error) to RESULT.json atomically and
   exits 0, or 1 on failure. A trainer killed on the way writes no result; its runner reports that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from services.finetune.curation import Example, read_split
from services.finetune.evaluation import (
    SideBySide,
    System,
    compare,
    compare_levers,
    gate,
    side_by_side_metrics,
    template_system,
)
from services.finetune.files import replace_file, staged_dir
from services.finetune.jobs import JobSpec
from services.finetune.model import (
    BASE_NAME,
    TinyLM,
    ensure_base_model,
    load_model,
    model_batch,
    render_prompt,
    seed_everything,
    training_ids,
)
from services.finetune.regression import REGRESSION_SET_VERSION, regression_set

LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]


class InjectedFailure(RuntimeError):
    """The fault a job's `fail_at` parameter asked for."""


def log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def render(example: Example) -> str:
    return render_prompt(example.question, example.context)


def train_adapter(spec: JobSpec, base_dir: Path, train: list[Example]) -> tuple[Any, dict[str, float]]:
    """The PEFT model after training, and the training metrics."""
    import torch
    from peft import LoraConfig, get_peft_model

    p = spec.params
    seed_everything(p.seed, p.threads)
    model = get_peft_model(
        load_model(base_dir),
        LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=LORA_TARGETS,
            fan_in_fan_out=True,  # GPT-2's Conv1D layers store weights transposed
            task_type="CAUSAL_LM",
        ),
    )
    trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
    total = sum(t.numel() for t in model.parameters())
    encoded = [training_ids(e.question, e.context, e.answer, p.max_len) for e in train]
    optimizer = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=p.learning_rate)
    generator = torch.Generator().manual_seed(p.seed)
    model.train()
    steps, tokens, losses = 0, 0, []
    started = time.perf_counter()
    for epoch in range(p.epochs):
        order = torch.randperm(len(encoded), generator=generator).tolist()
        for first in range(0, len(order), p.batch_size):
            if steps >= p.max_steps:
                break
            input_ids, mask, labels = model_batch([encoded[i] for i in order[first : first + p.batch_size]])
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            tokens += int(mask.sum())
            losses.append(float(loss.detach()))
            if p.fail_at == "train" and steps >= p.fail_after_steps:
                raise InjectedFailure(f"injected failure after {steps} training steps (fail_at=train)")
        log(f"epoch {epoch + 1}/{p.epochs}: {steps} steps, loss {losses[-1]:.4f}")
    seconds = time.perf_counter() - started
    model.eval()
    return model, {
        "train_examples": float(len(train)),
        "train_steps": float(steps),
        "train_tokens": float(tokens),
        "train_seconds": seconds,
        "train_tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "train_loss_first": losses[0] if losses else math.nan,
        "train_loss_last": losses[-1] if losses else math.nan,
        "trainable_parameters": float(trainable),
        "total_parameters": float(total),
    }


def write_artifact(spec: JobSpec, peft_model: Any, metrics: dict[str, float], extra: dict[str, Any]) -> Path:
    """The adapter folder, written to a temporary folder and renamed into place (module docstring)."""
    final = spec.artifact_dir
    if final.exists():
        raise FileExistsError(f"artifact {final} already exists")
    with staged_dir(final, label=spec.job_id) as staging:
        peft_model.save_pretrained(staging, safe_serialization=True)
        if spec.params.fail_at == "write":
            log("injected crash while writing the artifact (fail_at=write)")
            os._exit(70)  # no cleanup, no result: as a killed process leaves it
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (staging / "job.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    return final


def write_result(path: Path, result: dict[str, Any]) -> None:
    replace_file(path, json.dumps(result, indent=2, sort_keys=True, default=str).encode())


def run(spec: JobSpec) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    p = spec.params
    dataset = Path(spec.dataset_dir)
    train = read_split(dataset / "train.jsonl", spec.tenant_id)
    held_out = read_split(dataset / "eval.jsonl", spec.tenant_id)
    if not train:
        raise ValueError(f"dataset {dataset} has no training examples")
    log(f"job {spec.job_id}: {len(train)} train / {len(held_out)} eval examples from {dataset.name}")
    started = time.perf_counter()
    base_dir = ensure_base_model(Path(spec.models_dir), threads=p.threads)
    base_seconds = time.perf_counter() - started
    log(f"base model {base_dir.name} ready ({base_seconds:.1f}s)")
    peft_model, metrics = train_adapter(spec, base_dir, train)
    metrics["base_model_seconds"] = base_seconds
    log(f"trained: {metrics['train_tokens']:.0f} tokens at {metrics['train_tokens_per_s']:.0f} tokens/s")

    started = time.perf_counter()
    candidate = TinyLM("candidate", load_model(base_dir, None))
    # The trained weights, merged into a copy for evaluation: the same latency as a merged deployment.
    import copy

    candidate.model = copy.deepcopy(peft_model).merge_and_unload().eval()
    current = TinyLM(
        "current", load_model(base_dir, Path(spec.current_adapter) if spec.current_adapter else None)
    )
    systems = (System("candidate", candidate, render), System("current", current, render))
    pairs: dict[str, SideBySide] = {
        "heldout": compare(*systems, held_out, max_new_tokens=p.max_new_tokens),
        "regression": compare(*systems, regression_set(), max_new_tokens=p.max_new_tokens),
    }
    decision = gate(
        spec.gate,
        candidate=pairs["heldout"].a,
        current=pairs["heldout"].b,
        candidate_regression=pairs["regression"].a,
        current_regression=pairs["regression"].b,
    )
    # The other lever on the same held-out split: the current model under other prompt templates.
    # (Imported here: the module stays light for the GPU image, which lacks the bus's packages.)
    from services.generator.prompts import TemplateRegistry

    templates = TemplateRegistry()
    prompt_systems = [
        template_system(f"current+{tid}@{version}", current, templates.get(tid, version))
        for tid, version in p.template_refs()
    ]
    levers = compare_levers(
        pairs["heldout"].b,
        [*prompt_systems, pairs["heldout"].a],
        held_out,
        max_new_tokens=p.max_new_tokens,
    )
    metrics.update(side_by_side_metrics(pairs))
    metrics.update(levers.metrics())
    metrics.update(decision.metrics())
    metrics["eval_seconds"] = time.perf_counter() - started
    for name, pair in pairs.items():
        log(f"{name} set, candidate vs current:\n{pair.table()}")
    log(f"levers on the held-out set (prompt templates vs fine-tuning, from current):\n{levers.table()}")
    log(f"gate: {'promote' if decision.promote else 'keep current'}: {'; '.join(decision.reasons)}")

    extra = {
        "job_id": spec.job_id,
        "tenant_id": spec.tenant_id,
        "base_model": base_dir.name,
        "base_family": BASE_NAME,
        "dataset_version": dataset.name,
        "current_adapter": spec.current_adapter,
        "regression_set": REGRESSION_SET_VERSION,
        "params": p.as_strings(),
        "gate": {"promote": decision.promote, "reasons": list(decision.reasons)},
        "levers": levers.table(),
        "samples": {
            name: [
                {"question": e.question, "reference": e.answer, "candidate": a, "current": b}
                for e, a, b in zip(examples, pair.a.outputs, pair.b.outputs, strict=True)
            ][:5]
            for name, pair, examples in (
                ("heldout", pairs["heldout"], held_out),
                ("regression", pairs["regression"], regression_set()),
            )
        },
    }
    artifact = write_artifact(spec, peft_model, metrics, extra)
    log(f"artifact written to {artifact}")
    return {
        "status": "succeeded",
        "metrics": metrics,
        "artifact_dir": str(artifact),
        "base_model": base_dir.name,
        "gate": extra["gate"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one LoRA fine-tune job from its spec.")
    parser.add_argument("--spec", required=True, type=Path, help="JobSpec JSON file")
    parser.add_argument("--result", required=True, type=Path, help="where to write the result JSON")
    args = parser.parse_args(argv)
    try:
        spec = JobSpec.from_json(args.spec.read_text())
        result = run(spec)
    except Exception as exc:  # every failure becomes the job's reason
        traceback.print_exc()
        write_result(args.result, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_result(args.result, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
