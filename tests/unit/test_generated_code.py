"""gen/python is exactly what proto/ generates, and docs/asyncapi.json is what the catalog generates."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

from shared import asyncapi
from shared.topics import CATALOG

REPO = Path(__file__).resolve().parents[2]


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    diffs = [f"{left / n}" for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        diffs += _differences(left / sub, right / sub)
    return diffs


def test_generated_python_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", "scripts/gen_proto.sh", str(tmp_path)],
        cwd=REPO,
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert _differences(REPO / "gen" / "python" / "llmops", tmp_path / "llmops") == [], "run `make proto`"


def test_asyncapi_document_is_current_and_lists_every_topic() -> None:
    committed = json.loads((REPO / "docs" / "asyncapi.json").read_text())
    assert committed == json.loads(json.dumps(asyncapi.document(), sort_keys=True)), "run `make asyncapi`"
    channels = {c["address"] for c in committed["channels"].values()}
    assert channels == {t.name for t in CATALOG}
    schemas = committed["components"]["schemas"]
    assert "llmops_query_v1_QueryRequested" in schemas
    assert "meta" in schemas["llmops_query_v1_QueryRequested"]["properties"]
