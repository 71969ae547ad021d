"""A managed background process: start detached, wait for health, log to a known file, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm


class InfraError(RuntimeError):
    """A component could not be installed or started; the message says why and where the log is."""


@dataclass
class ManagedProcess:
    name: str
    command: Sequence[str]
    state_dir: Path
    health: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout_s: float = 120.0
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, wait: bool = True) -> None:
        """Start unless already running, then (if `wait`) wait until healthy or fail with the log's tail."""
        if self.running():
            if wait:
                self.wait_healthy()
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # outlives `make infra-up`; stopped through its pid file
            )
        self.pid_path.write_text(str(proc.pid))
        self._popen = proc
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        proc = self._popen
        deadline = time.monotonic() + self.start_timeout_s
        with tqdm(
            desc=f"waiting for {self.name}",
            bar_format="{desc} {elapsed}",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        ) as bar:
            while time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    raise InfraError(f"{self.name} exited with {proc.returncode}; log:\n{self.log_tail()}")
                if self.health():
                    return
                time.sleep(0.3)
                bar.update(0)
        raise InfraError(
            f"{self.name} not healthy after {self.start_timeout_s:.0f}s; log:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 30.0, sig: int = signal.SIGTERM) -> None:
        """Signal, wait, then SIGKILL; removes the pid file."""
        self.signal(sig)
        self.wait_stopped(timeout_s)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the process group without waiting (to stop several nodes at once)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def wait_stopped(self, timeout_s: float = 30.0) -> None:
        """Wait for exit after `signal`; SIGKILL when it takes longer than `timeout_s`."""
        pid = self.pid()
        if pid is not None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL at once, for fault tests."""
        self.stop(timeout_s=0, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie whose parent is not us still answers kill(0); /proc tells.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def run_with_status(
    name: str,
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a long install step (mvn, go install) with a one-line status: last output line and elapsed time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # On a terminal the line updates in place; in CI logs it is printed every 10 s at most.
    interactive = sys.stderr.isatty()
    with (
        log_path.open("ab") as log,
        tqdm(
            desc=name,
            bar_format="{desc}: {postfix} [{elapsed}]",
            file=sys.stderr,
            mininterval=0.2 if interactive else 10,
        ) as bar,
    ):
        proc = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        assert proc.stdout is not None
        for lines, raw in enumerate(proc.stdout, start=1):
            log.write(raw)
            bar.set_postfix_str(f"{lines} lines, {raw.decode(errors='replace').strip()[-60:]}", refresh=False)
            bar.update(0)
        if proc.wait() != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise InfraError(f"{name} failed (exit {proc.returncode}); full log {log_path}:\n{tail}")
