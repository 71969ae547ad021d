"""A real LoRA fine-tune of the tiny model in a subprocess: success with candidate metrics, and
crashes (an injected error, a crash while writing, a kill) that fail the job and leave nothing
half-written. Runs on CPU in seconds per job (the base model is built once into the cache)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.finetune.curation import Answered, CurationPolicy, curate, write_dataset
from services.finetune.jobs import JobSpec, TrainingParams
from services.finetune.model import ensure_base_model, load_model
from services.finetune.runner import LocalProcessRunner
from services.finetune.settings import FinetuneSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FACTS = [
    (
        "How long is feedback kept?",
        "Feedback is kept for ninety days.",
        "Retention: feedback for ninety days.",
    ),
    (
        "How long are query events kept?",
        "Query events are kept for one day.",
        "Query events are kept for one day.",
    ),
    (
        "What reads a partition?",
        "Exactly one consumer of the group.",
        "Each partition is read by one consumer.",
    ),
    ("Where do model versions live?", "In numbered folders.", "Model versions live in numbered folders."),
    ("What does alpha 0 mean?", "Pure keyword search.", "An alpha of 0 is pure keyword search."),
    ("Where are rows written?", "Into ClickHouse.", "The monitor writes one wide row into ClickHouse."),
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = [
        Answered("t1", f"c{i}", f"{q} (#{i})", a, (ctx,), 0.9, i) for i, (q, a, ctx) in enumerate(FACTS * 4)
    ]
    dataset, _ = curate("t1", answers, [], CurationPolicy(), None)
    return write_dataset(dataset, tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def models_dir() -> Path:
    folder = FinetuneSettings().models_dir  # the shared cache: the base model is built once
    ensure_base_model(folder)
    return folder


def spec(job_id: str, dataset_dir: Path, models_dir: Path, artifacts: Path, **params: object) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        tenant_id="t1",
        dataset_dir=str(dataset_dir),
        artifacts_dir=str(artifacts),
        models_dir=str(models_dir),
        params=TrainingParams(**params),  # type: ignore[arg-type]
    )


def leftovers(artifacts: Path) -> list[str]:
    return sorted(p.name for p in artifacts.iterdir()) if artifacts.exists() else []


async def test_training_succeeds_with_candidate_metrics(
    dataset_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    runner = LocalProcessRunner(tmp_path / "jobs", timeout_s=300)
    started = time.monotonic()
    result = await runner.run(spec("ft-ok", dataset_dir, models_dir, artifacts))
    elapsed = time.monotonic() - started
    log = (tmp_path / "jobs" / "ft-ok" / "train.log").read_text()
    assert result.succeeded, f"{result.error}\n{log}"
    m = result.metrics
    print(f"\njob took {elapsed:.1f}s; metrics: { {k: round(v, 4) for k, v in sorted(m.items())} }")
    assert m["train_tokens"] > 0 and m["train_tokens_per_s"] > 0 and m["train_steps"] > 0
    assert m["trainable_parameters"] < m["total_parameters"]
    for side in ("candidate", "current"):
        for metric in ("eval_loss", "perplexity", "answer_f1", "latency_ms_p50", "ms_per_token"):
            assert f"heldout_{side}_{metric}" in m and f"regression_{side}_{metric}" in m
    assert m["heldout_candidate_eval_loss"] < m["heldout_current_eval_loss"], (
        "training did not lower the loss"
    )
    assert m["gate_promote"] in (0.0, 1.0)
    # Both levers on the held-out split, as deltas from the current model: prompt templates, fine-tuning.
    for system in ("current_grounded_qa_v1", "current_grounded_qa_v2", "candidate"):
        assert f"lever_{system}_answer_f1_delta" in m and f"lever_{system}_eval_loss_delta" in m
    assert m["lever_candidate_eval_loss_delta"] == pytest.approx(
        m["heldout_candidate_eval_loss"] - m["heldout_current_eval_loss"]
    )
    assert leftovers(artifacts) == ["ft-ok"]
    artifact = Path(result.artifact_dir)
    files = set(leftovers(artifact))
    assert {"adapter_model.safetensors", "adapter_config.json", "metrics.json", "job.json"} <= files
    base = ensure_base_model(models_dir)
    merged = load_model(base, artifact)  # the adapter loads onto the cached base
    assert merged.config.n_layer == 2

    # Same seed, same data: the same training curve (deterministic).
    again = await runner.run(spec("ft-ok2", dataset_dir, models_dir, artifacts))
    assert again.succeeded
    assert again.metrics["train_loss_last"] == pytest.approx(m["train_loss_last"], abs=1e-6)


async def test_injected_training_failure_fails_the_job(
    dataset_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    runner = LocalProcessRunner(tmp_path / "jobs", timeout_s=300)
    result = await runner.run(
        spec("ft-err", dataset_dir, models_dir, artifacts, fail_at="train", fail_after_steps=2)
    )
    assert not result.succeeded
    assert "InjectedFailure: injected failure after 2 training steps" in result.error
    assert leftovers(artifacts) == []


async def test_crash_while_writing_leaves_nothing_half_written(
    dataset_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    runner = LocalProcessRunner(tmp_path / "jobs", timeout_s=300)
    result = await runner.run(spec("ft-crash", dataset_dir, models_dir, artifacts, fail_at="write", epochs=1))
    assert not result.succeeded
    assert "exited with code 70 without a result" in result.error
    assert "injected crash while writing" in result.error  # the last log line
    assert leftovers(artifacts) == []  # the temporary folder is gone, the final one never appeared


async def test_killed_trainer_fails_the_job(dataset_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    runner = LocalProcessRunner(tmp_path / "jobs", timeout_s=300)

    async def kill_soon() -> None:
        async def kill() -> None:
            await asyncio.sleep(3.0)
            assert runner.kill("ft-kill")

        asyncio.get_running_loop().create_task(kill())

    result = await runner.run(
        spec("ft-kill", dataset_dir, models_dir, artifacts, epochs=100, max_steps=100_000), kill_soon
    )
    assert not result.succeeded
    assert result.error.startswith("trainer killed by signal SIGKILL")
    assert leftovers(artifacts) == []
