"""Job runners: where a training run executes. The scheduler only sees the `JobRunner` protocol.

- `LocalProcessRunner` (default): `python -m services.finetune.train --spec ... --result ...` as a child
  process, its output in ``<jobs_dir>/<job_id>/train.log``. A non-zero exit, a signal or a missing result
  is a failure whose reason names it (with the last log line); leftover temporary artifact folders of
  the job are removed, so a crash leaves nothing half-written behind.
- A Kubernetes runner (phase 2) creates the Job of ``deploy/k8s/finetune-job.yaml`` with the same spec
  (ConfigMap) and reads the same result file from the shared volume; it plugs in behind this protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.finetune.jobs import JobSpec


@dataclass(frozen=True)
class RunResult:
    succeeded: bool
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_dir: str = ""
    base_model: str = ""
    error: str = ""
    gate: dict[str, Any] = field(default_factory=dict)


class JobRunner(Protocol):
    async def run(self, spec: JobSpec, on_started: Any = None) -> RunResult:
        """Run the job to its end; `on_started()` (a coroutine function) is awaited once it runs."""
        ...


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(text[-lines:])


def clean_partial_artifacts(spec: JobSpec) -> list[Path]:
    """Remove temporary folders a crashed trainer of this job left beside the artifact."""
    parent = spec.artifact_dir.parent
    removed = []
    if parent.is_dir():
        for leftover in parent.glob(f".tmp-{spec.job_id}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


class LocalProcessRunner:
    def __init__(self, jobs_dir: Path, *, timeout_s: float = 3600.0, python: str = sys.executable) -> None:
        self.jobs_dir = jobs_dir
        self.timeout_s = timeout_s
        self.python = python
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    async def run(self, spec: JobSpec, on_started: Any = None) -> RunResult:
        folder = self.job_dir(spec.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        spec_path, result_path, log_path = folder / "spec.json", folder / "result.json", folder / "train.log"
        spec_path.write_text(spec.to_json())
        result_path.unlink(missing_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "services.finetune.train",
                "--spec",
                str(spec_path),
                "--result",
                str(result_path),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a SIGTERM to the scheduler does not reach the trainer first
            )
        self.processes[spec.job_id] = proc
        try:
            if on_started is not None:
                await on_started()
            try:
                code = await asyncio.wait_for(proc.wait(), self.timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                clean_partial_artifacts(spec)
                return RunResult(
                    False, error=f"training exceeded its {self.timeout_s:.0f}s limit and was killed"
                )
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            clean_partial_artifacts(spec)
            raise
        finally:
            self.processes.pop(spec.job_id, None)
        return self._result(spec, code, result_path, log_path)

    def _result(self, spec: JobSpec, code: int, result_path: Path, log_path: Path) -> RunResult:
        result: dict[str, Any] = {}
        if result_path.is_file():
            try:
                result = json.loads(result_path.read_text())
            except json.JSONDecodeError:
                result = {}
        if code == 0 and result.get("status") == "succeeded":
            return RunResult(
                True,
                metrics={k: float(v) for k, v in result.get("metrics", {}).items()},
                artifact_dir=str(result.get("artifact_dir", "")),
                base_model=str(result.get("base_model", "")),
                gate=dict(result.get("gate", {})),
            )
        clean_partial_artifacts(spec)
        if code < 0:
            reason = f"trainer killed by signal {signal.Signals(-code).name}"
        elif result.get("error"):
            reason = str(result["error"])
        else:
            reason = f"trainer exited with code {code} without a result"
        last = _tail(log_path)
        if last and last not in reason:
            reason = f"{reason} (last log line: {last[-300:]})"
        return RunResult(False, error=reason)

    def kill(self, job_id: str) -> bool:
        """Kill a running trainer (tests and ops drills); the job then fails with the signal as reason."""
        proc = self.processes.get(job_id)
        if proc is None or proc.returncode is not None:
            return False
        proc.kill()
        return True
