"""Result rows, the Markdown table every benchmark prints, and the files under bench/results/.

A benchmark hands back `Row`s (one line of the table each) plus its raw numbers as JSON-able data;
`write_results` puts the table in `latest.md` and the numbers in `latest.json`, so a later run can be
compared with the previous one by a diff.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADERS = ("benchmark", "variant A", "variant B", "ratio", "notes")


@dataclass(frozen=True)
class Row:
    """One table line: two variants of the same work and the ratio A / B (higher means A is faster)."""

    benchmark: str
    variant_a: str
    variant_b: str
    ratio: str
    notes: str = ""

    def cells(self) -> tuple[str, str, str, str, str]:
        return (self.benchmark, self.variant_a, self.variant_b, self.ratio, self.notes)


def status(message: str) -> None:
    """One progress line on stderr, so stdout carries only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rate(events_per_s: float) -> str:
    """A throughput as people read it: 12,345 ev/s."""
    return f"{events_per_s:,.0f} ev/s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Row], headers: Sequence[str] = HEADERS) -> str:
    """A GitHub Markdown table of `rows`, columns padded so it also reads well as plain text."""
    lines = [tuple(_cell(h) for h in headers), *(tuple(_cell(c) for c in row.cells()) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), separator, *(render(line) for line in lines[1:])])


def environment() -> dict[str, Any]:
    """What the numbers depend on: CPU count, Python and the library versions."""
    versions: dict[str, str] = {}
    for dist in ("faststream", "aiokafka", "protobuf"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


def write_results(
    rows: Sequence[Row],
    raw: Mapping[str, Any],
    *,
    results_dir: Path = RESULTS_DIR,
    preamble: str = "",
) -> tuple[Path, Path]:
    """Write `latest.md` (preamble + table) and `latest.json` (rows, raw numbers, environment)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    md_path = results_dir / "latest.md"
    json_path = results_dir / "latest.json"
    table = markdown_table(rows)
    md_path.write_text(f"{preamble}\n\n{table}\n" if preamble else f"{table}\n")
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "rows": [asdict(row) for row in rows],
        "raw": raw,
    }
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return md_path, json_path
