"""Triton Inference Server: the tritonserver binary that PyPI's nvidia-pytriton bundles, on CPU here.

It serves deploy/triton/models (Triton's standard repository layout, in git), so NVIDIA's container
can serve the same repository on GPUs, and a second, WRITABLE repository (`<state_dir>/triton-models`,
not in git) where the fine-tune loop publishes numbered versions of the models it trains (e.g.
`tiny_lora_lm`). Model names must be unique across both. In explicit model-control mode the models
named in `models` are loaded at start, and so is every model already in the writable repository
(a restarted Triton serves the versions promoted before it stopped); the fine-tune service loads new
versions through the model-control API.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared.infra.models import GEMMA_MODEL, GGUF_ENV, gemma_gguf_path, prepare_gemma
from shared.infra.paths import DEPLOY_DIR, REPO_ROOT, cache_dir
from shared.infra.process import InfraError, ManagedProcess

MODEL_REPOSITORY = DEPLOY_DIR / "triton" / "models"
WRITABLE_REPOSITORY_NAME = "triton-models"


def writable_models(repository: Path) -> list[str]:
    """Models of a writable repository that are complete enough to load (a config.pbtxt)."""
    if not repository.is_dir():
        return []
    return sorted(
        p.name for p in repository.iterdir() if not p.name.startswith(".") and (p / "config.pbtxt").is_file()
    )


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise InfraError("nvidia-pytriton is not installed: run `make install`") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def install_dir() -> Path:
    """Backends folder for this interpreter's Python version (the stub is per version)."""
    return cache_dir() / "triton" / f"backends-py{sys.version_info.major}.{sys.version_info.minor}"


def install_triton_backends() -> Path:
    """Assemble a backends folder whose python backend uses the stub for this interpreter's version."""
    bundled = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backends = install_dir()
    python_backend = backends / "python"
    stub = bundled / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise InfraError(f"nvidia-pytriton bundles no python backend stub for Python {version}")
    python_backend.mkdir(parents=True, exist_ok=True)
    for source in [*(bundled / "backends" / "python").glob("*.*"), stub]:
        target = python_backend / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    return backends


@dataclass
class TritonServer:
    state_dir: Path
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    model_repository: Path = MODEL_REPOSITORY
    models: list[str] = field(default_factory=lambda: ["tiny_llm"])
    # The writable repository for promoted model versions; None means <state_dir>/triton-models.
    writable_repository: Path | None = None

    @property
    def versions_repository(self) -> Path:
        return self.writable_repository or self.state_dir / WRITABLE_REPOSITORY_NAME

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def process(self) -> ManagedProcess:
        site_packages = sysconfig.get_paths()["purelib"]
        backends = install_dir()
        writable = self.versions_repository
        to_load = [*self.models, *(m for m in writable_models(writable) if m not in self.models)]
        return ManagedProcess(
            name="triton",
            command=[
                str(_pytriton_dir() / "bin" / "tritonserver"),
                f"--model-repository={self.model_repository}",
                f"--model-repository={writable}",
                f"--backend-directory={backends}",
                "--model-control-mode=explicit",  # the fine-tune scheduler loads versions via the API
                *[f"--load-model={m}" for m in to_load],
                "--http-address=127.0.0.1",
                f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1",
                f"--grpc-port={self.grpc_port}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={self.metrics_port}",
                "--allow-cpu-metrics=false",
                "--allow-gpu-metrics=false",
                "--exit-timeout-secs=10",
                "--log-verbose=0",
            ],
            state_dir=self.state_dir,
            health=self.healthy,
            env={
                # The python backend stub links libpython by soname; point it at this interpreter's
                # library, not an older system one (see ../shared/NOTES.md).
                # The stub is copied out of the wheel, so its RPATH no longer finds the wheel's libs.
                "LD_LIBRARY_PATH": f"{sysconfig.get_config_var('LIBDIR')}:"
                f"{site_packages}/nvidia_pytriton.libs",
                # Models import numpy (and the embedding model) from this environment; the stub
                # ignores PYTHONPATH, so the models add this to sys.path themselves.
                "LLMOPS_TRITON_PYTHONPATH": f"{site_packages}:{REPO_ROOT}",
                # Where gemma3_270m finds its GGUF (prepare_gemma assembles it there), also when it
                # is loaded later through the model control API.
                GGUF_ENV: str(gemma_gguf_path()),
            },
            start_timeout_s=120,
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=1
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def start(self) -> None:
        install_triton_backends()
        self.versions_repository.mkdir(parents=True, exist_ok=True)
        if GEMMA_MODEL in self.models:
            prepare_gemma()
        self.process().start()

    def stop(self) -> None:
        self.process().stop(timeout_s=30)
