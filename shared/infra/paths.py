"""Where infrastructure is cached (survives clones) and where its state lives (per stack)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"


def cache_dir() -> Path:
    """Downloaded jars and built binaries; shared by every checkout (LLMOPS_CACHE_DIR overrides)."""
    return Path(os.environ.get("LLMOPS_CACHE_DIR", Path.home() / ".cache" / "llmops"))


def default_state_dir() -> Path:
    """Data, logs and pid files of the stack `make run` starts (LLMOPS_STATE_DIR overrides)."""
    return Path(os.environ.get("LLMOPS_STATE_DIR", REPO_ROOT / ".llmops"))
