"""Crash-safe files and folders: a reader (Triton, a job, the next start) sees them complete or not at all.

`staged_dir` writes a folder beside its final place (same filesystem, a `.tmp-<label>-*` name that
Triton and the readers ignore), makes it readable, fsyncs every file and folder, then renames it into
place and fsyncs the parent. An error removes the staging folder; a crash leaves only a `.tmp-*` folder
for the next start to sweep. `replace_file` does the same for one file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """World-readable (0755 folders, 0644 files: Triton's stub and the jobs read them) and fsynced."""
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, 0o644)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(folder))
    root.chmod(0o755)


@contextmanager
def staged_dir(
    final: Path,
    *,
    label: str,
    exist_ok: bool = True,
    before_rename: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """An empty staging folder for the content of `final`, renamed into place when the block ends
    without an error (module docstring). When `final` appeared meanwhile: with `exist_ok` (content that
    is the same by construction, e.g. a content-addressed dataset) the staging folder is dropped;
    without it the rename's error propagates (another writer took the name). `before_rename(staging)`
    runs just before the rename (tests use it to simulate a crash)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{label}-", dir=final.parent))
    try:
        yield staging
        _sync_tree(staging)
        if before_rename is not None:
            before_rename(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (exist_ok and final.is_dir()):
                raise
        else:
            fsync_dir(final.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_file(path: Path, data: bytes) -> None:
    """Write `path` through a fsynced temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    with partial.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    fsync_dir(path.parent)
