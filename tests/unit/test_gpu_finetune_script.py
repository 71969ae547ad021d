"""bench/gpu/finetune_gemma_lora.py on CPU: the smoke run of the whole script (the tiny model), and the
pieces that make it the platform's job (prompt, target and loss masking, eval loss) checked against
`services.finetune`'s own functions. The Gemma weights are not needed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from bench.gpu import finetune_data, gemma_weights
from bench.gpu import finetune_gemma_lora as bench
from services.finetune.curation import read_split
from services.finetune.model import TinyLM, ensure_base_model, load_model, render_prompt, training_ids
from services.finetune.settings import FinetuneSettings
from shared.infra.paths import REPO_ROOT

GPU_BENCH = REPO_ROOT / "bench" / "gpu"
SCRIPT = GPU_BENCH / "finetune_gemma_lora.py"


@pytest.fixture(scope="module")
def models_dir() -> Path:
    folder = FinetuneSettings().models_dir  # the shared cache: the tiny base model is built once
    ensure_base_model(folder)
    return folder


def test_smoke_run_writes_the_report(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--steps", "6", "--out", str(out)),
            *("--models-dir", str(models_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "step 6/6" in proc.stdout  # progress lines
    report = json.loads((out / "finetune_gpu_bench.json").read_text())
    assert (out / "finetune_gpu_bench.md").read_text().startswith("## LoRA fine-tune of")
    assert report["model_kind"] == "tiny" and report["gpu"] == "none (cpu)"
    training = report["training"]
    assert training["steps"] == 6 and training["stopped_by"] == "steps"
    assert training["tokens"] > 0 and training["target_tokens"] < training["tokens"]
    assert training["tokens_per_s"] > 0 and training["steady_tokens_per_s"] > 0
    evals = report["eval"]
    for key in ("eval_loss_before", "eval_loss_after", "eval_loss_delta", "answer_f1_before"):
        assert math.isfinite(evals[key]), key
    assert evals["eval_loss_delta"] == pytest.approx(evals["eval_loss_after"] - evals["eval_loss_before"])
    assert report["dataset"] == {"dir": "bench/gpu/data", "train_examples": 179, "eval_examples": 6}
    assert set(report["wall_seconds"]) == {"load", "eval_before", "train", "eval_after", "total"}
    assert {"torch", "transformers", "peft"} <= set(report["versions"])
    assert report["params"]["lora_targets"] == ["c_attn", "c_proj", "c_fc"]


def test_a_missing_gpu_is_a_clear_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr and "--device cpu --smoke" in proc.stderr


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(gemma_weights.MissingPiece, match="does not exist"):
        gemma_weights.locate_gguf(tmp_path, tmp_path / "nothing.gguf")
    with pytest.raises(gemma_weights.MissingPiece, match=r"lacks the GGUF chunk file\(s\) .*part00"):
        gemma_weights.locate_gguf(tmp_path, None, tmp_path)


def test_chunks_are_joined_and_checked(tmp_path: Path) -> None:
    weights = gemma_weights
    for name in weights.CHUNK_FILES:
        (tmp_path / name).write_bytes(b"not gemma")
    with pytest.raises(weights.MissingPiece, match="sha256 differs"):
        weights.join_chunks(tmp_path, tmp_path / "joined.gguf")
    assert not (tmp_path / "joined.gguf").exists()


def test_the_examples_are_encoded_as_the_job_encodes_them() -> None:
    """With the tiny model's byte vocabulary the script's encoding is `training_ids` itself."""
    vocab = bench.byte_vocab()
    for example in read_split(GPU_BENCH / "data" / "train.jsonl", "bench")[:20]:
        for max_len in (320, 96):
            expected = training_ids(example.question, example.context, example.answer, max_len)
            assert bench.encode_example(vocab, example, max_len) == expected
        prompt, target = bench.job_texts(example, 320)
        assert prompt.endswith(f"\nQuestion: {example.question}\nAnswer:")
        assert prompt.startswith(f"Context: {example.context[0][:40]}")
        assert target == " " + example.answer


def test_eval_scores_and_generations_match_tiny_lm(models_dir: Path) -> None:
    """The script's `Completer` scores and generates as the job's `TinyLM` does."""
    model = load_model(ensure_base_model(models_dir))
    ours = bench.Completer("ours", model, bench.byte_vocab(), "cpu")
    theirs = TinyLM("theirs", model)
    for example in read_split(GPU_BENCH / "data" / "eval.jsonl", "bench")[:3]:
        prompt = render_prompt(example.question, example.context)
        nll, count = ours.answer_loss(prompt, example.answer)
        expected_nll, expected_count = theirs.answer_loss(prompt, example.answer)
        assert count == expected_count and nll == pytest.approx(expected_nll, rel=1e-5)
        assert ours.generate(prompt, 12) == theirs.generate(prompt, 12)


def test_hf_vocabulary_wraps_a_tokenizer() -> None:
    """Gemma's tokenizer as the script sees it (a stand-in: no weights here)."""

    class Tokenizer:
        eos_token_id, bos_token_id, pad_token_id = 1, 2, 0
        pieces: ClassVar[dict[str, int]] = {"\n": 107, "\n\n": 108, "<end_of_turn>": 106}

        def get_vocab(self) -> dict[str, int]:
            return dict(self.pieces)

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            assert not add_special_tokens
            return [self.pieces[text]] if text in self.pieces else [200 + ord(c) for c in text]

        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return "".join(chr(i - 200) for i in ids if i >= 200)

    vocab = bench.hf_vocab(Tokenizer())
    assert (vocab.bos, vocab.eos, vocab.pad) == (2, 1, 0)
    assert vocab.stop == (1, 106, 107, 108)
    example = read_split(GPU_BENCH / "data" / "train.jsonl", "bench")[0]
    ids, prompt_len = bench.encode_example(vocab, example, 320)
    assert ids[0] == 2 and ids[-1] == 1
    assert vocab.decode(ids[prompt_len:]) == " " + example.answer


def test_the_dataset_files_are_what_the_generator_writes() -> None:
    data = finetune_data
    for name, text in data.splits().items():
        assert (GPU_BENCH / "data" / name).read_text() == text, f"rerun bench/gpu/finetune_data.py ({name})"
    examples = data.build_examples()
    assert len(examples) == 228 and len({e.example_id for e in examples}) == 228


def test_a_missing_gguf_reader_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if not installed
    with pytest.raises(gemma_weights.MissingPiece, match="the `gguf` package is missing"):
        gemma_weights.require_gguf_reader()


class _Tokenizer:
    """A stand-in with the two things check_tokenizer reads."""

    bos_token_id = 2

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": self.ids}


def test_a_wrongly_converted_gguf_tokenizer_is_refused() -> None:
    # What transformers 5.17.0 and 5.24.0 gave for the probe sentence with the Gemma GGUF.
    broken = [2825, 502, 2146, 975, 494, 499, 510, 516, 712, 535, 1929, 529, *range(11)]
    right = [2, 3689, 17126, 506, 145435, 529, 496, 75573, 11713, 2299, 236881]
    gemma_weights.check_tokenizer(_Tokenizer(right))
    with pytest.raises(gemma_weights.MissingPiece, match="converts Gemma's GGUF tokenizer wrongly"):
        gemma_weights.check_tokenizer(_Tokenizer(broken))
    with pytest.raises(gemma_weights.MissingPiece, match="first id 3689"):
        gemma_weights.check_tokenizer(_Tokenizer(right[1:]))  # short enough, but no BOS


def test_training_stops_at_the_time_budget(models_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from services.finetune.jobs import TrainingParams

    model = get_peft_model(
        load_model(ensure_base_model(models_dir)),
        LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    examples = read_split(GPU_BENCH / "data" / "train.jsonl", "bench")[:8]
    encoded = [bench.encode_example(bench.byte_vocab(), e, 128) for e in examples]
    params = TrainingParams(max_steps=50, batch_size=4, max_len=128)
    stats = bench.train_lora(model, encoded, params, device="cpu", deadline=0.0, log_every=10)
    assert (stats.steps, stats.stopped_by, stats.loss_first) == (0, "time budget", None)
    stats = bench.train_lora(
        model, encoded, replace(params, max_steps=5), device="cpu", deadline=math.inf, log_every=10
    )
    assert (stats.steps, stats.stopped_by, stats.epochs) == (5, "steps", 2.5)
    one_epoch = sum(len(ids) for ids, _ in encoded)  # every token is a real one: no padding counted
    assert 2 * one_epoch < stats.tokens < 3 * one_epoch
    assert stats.steady_tokens_per_s is not None and stats.steady_tokens_per_s > 0


def test_the_script_imports_nothing_the_gpu_image_lacks() -> None:
    """The GPU image has torch, transformers, peft and numpy, not the platform's other dependencies:
    the script's imports of `services.finetune` must stay within those (torch & co. load lazily)."""
    code = (
        "import sys; before = set(sys.modules); import bench.gpu.finetune_gemma_lora; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    loaded = set(proc.stdout.split())
    third_party = {m for m in loaded if m not in sys.stdlib_module_names and not m.startswith("_")}
    assert third_party <= {"bench", "services", "shared", "numpy", "cython_runtime"}, third_party
