"""The tiny causal LM the fine-tune loop trains on CPU, built here from nothing (no hub download).

- Tokenizer (`ByteTokenizer`): UTF-8 bytes are the tokens 0-255, plus BOS, EOS and PAD: any text
  round-trips, nothing is downloaded, and the vocabulary stays 259 entries.
- Model: a transformers GPT-2 (`TINY_CONFIG`: 2 layers, 64 wide, 4 heads, 512 positions, ~0.1M
  parameters) initialised from a seed and briefly pre-trained on `deploy/sample-corpus`
  (`ensure_base_model`), so it has seen the platform's language before any fine-tune. The result is
  the "current" base artifact, cached under `<models_dir>/<BASE_NAME>-<fingerprint>/` (the fingerprint
  covers the config, the corpus and the pre-training recipe) and built once, under a file lock, by
  whichever process needs it first.
- Prompt format (`render_prompt`): ``Context: <first passage>\\nQuestion: <q>\\nAnswer:``; the target is
  `` <answer>`` then EOS. The context is cut so prompt and answer fit `max_len` tokens.

torch and transformers are imported inside the functions: the service process never loads them, only
the training subprocess does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.finetune.files import staged_dir
from shared.infra.paths import DEPLOY_DIR

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel

    from services.finetune.evaluation import Generation

BASE_NAME = "tiny-gpt2-bytes"
BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259
NEWLINE = ord("\n")
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "n_positions": 512,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_inner": 256,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
    "bos_token_id": BOS,
    "eos_token_id": EOS,
    "pad_token_id": PAD,
}
PRETRAIN: dict[str, Any] = {"seed": 1234, "steps": 150, "batch": 8, "seq_len": 128, "lr": 3e-3, "recipe": 1}
CORPUS_DIR = DEPLOY_DIR / "sample-corpus"
MAX_ANSWER_BYTES = 160


class ByteTokenizer:
    """UTF-8 bytes as tokens; BOS/EOS/PAD above them."""

    bos, eos, pad, vocab_size = BOS, EOS, PAD, VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


TOKENIZER = ByteTokenizer()


def render_prompt(question: str, context: Sequence[str], *, budget_bytes: int = 200) -> str:
    """The model's own prompt format (its template version "tiny-v1")."""
    passage = context[0] if context else ""
    passage = passage.encode("utf-8")[: max(budget_bytes, 0)].decode("utf-8", "ignore")
    return f"Context: {passage}\nQuestion: {question}\nAnswer:"


def training_ids(question: str, context: Sequence[str], answer: str, max_len: int) -> tuple[list[int], int]:
    """(token ids, prompt length) of one example: BOS, prompt, " answer", EOS, within `max_len`."""
    answer_ids = [*TOKENIZER.encode(" " + answer)[:MAX_ANSWER_BYTES], EOS]
    overhead = len(render_prompt(question, [], budget_bytes=0).encode()) + 1
    budget = max_len - len(answer_ids) - overhead
    prompt_ids = [BOS, *TOKENIZER.encode(render_prompt(question, context, budget_bytes=budget))]
    prompt_ids = prompt_ids[: max(max_len - len(answer_ids), 1)]
    return [*prompt_ids, *answer_ids], len(prompt_ids)


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(threads, 1))
    torch.use_deterministic_algorithms(True)


def corpus_text() -> str:
    """The sample corpus as plain text (HTML tags removed), files in name order."""
    parts = []
    for path in sorted(CORPUS_DIR.glob("*")):
        if path.is_file():
            text = path.read_text(errors="replace")
            if path.suffix in {".html", ".htm"}:
                text = re.sub(r"<[^>]+>", " ", text)
            parts.append(re.sub(r"[ \t]+", " ", text))
    return "\n\n".join(parts)


def base_fingerprint() -> str:
    recipe = json.dumps({"config": TINY_CONFIG, "pretrain": PRETRAIN}, sort_keys=True).encode()
    return hashlib.sha256(recipe + corpus_text().encode()).hexdigest()[:12]


def base_model_dir(models_dir: Path) -> Path:
    return models_dir / f"{BASE_NAME}-{base_fingerprint()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base_model(models_dir: Path, *, threads: int = 2) -> Path:
    """The cached base model folder, pre-training it first when missing (one process at a time; the
    folder appears complete or not at all)."""
    final = base_model_dir(models_dir)
    if (final / "manifest.json").is_file():
        return final
    with _locked(models_dir / f".{final.name}.lock"):
        if (final / "manifest.json").is_file():
            return final
        if final.exists():  # a folder without manifest: an older, broken attempt
            shutil.rmtree(final)
        with staged_dir(final, label=final.name) as staging:
            stats = _pretrain(staging, threads)
            (staging / "manifest.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    return final


def _pretrain(out: Path, threads: int) -> dict[str, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    seed_everything(PRETRAIN["seed"], threads)
    model = GPT2LMHeadModel(GPT2Config(**TINY_CONFIG))
    data = torch.tensor(TOKENIZER.encode(corpus_text()), dtype=torch.long)
    seq, batch = PRETRAIN["seq_len"], PRETRAIN["batch"]
    generator = torch.Generator().manual_seed(PRETRAIN["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"])
    model.train()
    started = time.perf_counter()
    losses = []
    for _ in range(PRETRAIN["steps"]):
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=generator)
        ids = torch.stack([data[s : s + seq] for s in starts.tolist()])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - started
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(out, safe_serialization=True)
    tokens = PRETRAIN["steps"] * batch * seq
    return {
        "name": base_model_dir(out.parent).name,
        "base_model": BASE_NAME,
        "fingerprint": base_fingerprint(),
        "config": TINY_CONFIG,
        "pretrain": PRETRAIN,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


def load_model(folder: Path, adapter: Path | None = None) -> GPT2LMHeadModel:
    """The base model at `folder`, with the LoRA adapter at `adapter` merged in when given."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()  # type: ignore[no-untyped-call]
    return model


class TinyLM:
    """A loaded model as the evaluation harness sees it (`services.finetune.evaluation.CompletionModel`)."""

    def __init__(self, name: str, model: Any, *, max_len: int = 384) -> None:
        self.name = name
        self.model = model
        self.max_len = max_len

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        import torch

        from services.finetune.evaluation import Generation

        ids = [BOS, *TOKENIZER.encode(prompt)][-(self.max_len - max_new_tokens) :]
        with torch.no_grad():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=[EOS, NEWLINE],
                pad_token_id=PAD,
            )
        new = out[0, len(ids) :].tolist()
        return Generation(TOKENIZER.decode(new).strip(), len(new))

    def answer_loss(self, prompt: str, answer: str) -> tuple[float, int]:
        """Summed negative log-likelihood of " answer" + EOS after the prompt, and its token count."""

        answer_ids = [*TOKENIZER.encode(" " + answer)[:MAX_ANSWER_BYTES], EOS]
        prompt_ids = [BOS, *TOKENIZER.encode(prompt)][-(self.max_len - len(answer_ids)) :]
        return target_nll(self.model, prompt_ids, answer_ids), len(answer_ids)


def target_nll(model: Any, prompt_ids: Sequence[int], target_ids: Sequence[int], device: Any = None) -> float:
    """Summed negative log-likelihood of `target_ids` after `prompt_ids` under a causal LM (the prompt
    is masked out of the loss), computed without gradients."""
    import torch

    ids = torch.tensor([[*prompt_ids, *target_ids]], device=device)
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(
        logits[0, :-1].float(), labels[0, 1:], ignore_index=-100, reduction="sum"
    )
    return float(loss)


def model_batch(
    examples: Sequence[tuple[list[int], int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded (input_ids, attention_mask, labels) with the prompt and padding masked out of the loss."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return input_ids, mask, labels


def env_threads(default: int = 2) -> int:
    return int(os.environ.get("LLMOPS_FINETUNE_TRAIN_THREADS", default))
