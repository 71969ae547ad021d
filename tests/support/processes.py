"""Run a service as a separate OS process and wait until it reports ready."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], workdir: Path, env_prefix: str
    ) -> None:
        self.name = name
        self.args = list(args)
        self.workdir = workdir
        self.ready_file = workdir / f"{name}.ready.json"
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, **env, f"{env_prefix}READY_FILE": str(self.ready_file)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Any] = {}

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        self.ready_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *self.args], cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready_file.exists():
                self.endpoints = json.loads(self.ready_file.read_text())
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    @property
    def grpc_target(self) -> str:
        return str(self.endpoints["grpc"])

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released): to fake a down server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def platform_services(
    names: Iterable[str], env: Mapping[str, str], workdir: Path, timeout_s: float = 240.0
) -> Iterator[dict[str, ServiceProcess]]:
    """Start `python -m services.<name>` for each name (free gRPC and metrics ports, `env` added),
    in order and each ready before the next; kill them all on exit."""
    procs: dict[str, ServiceProcess] = {}
    try:
        for name in names:
            prefix = f"LLMOPS_{name.upper()}_"
            service_env = {**env, f"{prefix}GRPC_PORT": "0", f"{prefix}METRICS_PORT": "0"}
            procs[name] = ServiceProcess(
                name, ["-m", f"services.{name}"], service_env, workdir, env_prefix=prefix
            )
            procs[name].start(timeout_s=timeout_s)
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()


async def hold_chdb(path: Path) -> asyncio.subprocess.Process:
    """A process that opens the embedded ClickHouse at `path` and keeps it: the engine refuses a second
    owner, so a monitor on that path cannot write until the holder is killed. Returns once it holds."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys,time; from chdb import session; s = session.Session(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)",
        str(path),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 60)).strip() == b"held"
    except BaseException:
        holder.kill()
        await holder.wait()
        raise
    return holder
