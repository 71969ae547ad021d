"""Promotion and rollback: numbered versions in Triton's writable model repository, staged canary shares.

- `ModelRepository` writes a version as `<repo>/<model>/<N>` (`model.py`, `base/`, `adapter/`,
  `manifest.json`): into a temporary folder `<repo>/<model>/.tmp-<N>-*` (same filesystem; Triton
  ignores names that are not numbers), every file and folder fsynced, then renamed to `<N>` and the
  parent fsynced. A crash before the rename leaves only a `.tmp-*` folder, removed at the next start,
  never a version Triton could load. Version numbers are never reused (retired and failed versions
  keep theirs as `.retired-<N>` / `.failed-<N>`). Version 1 is the base model without an adapter.
- `Promoter.on_succeeded` (the scheduler's hook) promotes a job the gate passed: write version N+1,
  load it through Triton's model-control API (the model's version policy serves every version, so
  stable and canary run side by side), check that version N+1 is READY and answers a smoke
  inference, and only then publish `ModelVersionPromoted(traffic_share=<first canary stage>)`; the
  generators shift that share of traffic to it. A version that fails to load or to answer is moved
  aside (`.failed-<N>`), the model reloaded without it, and nothing is published.
- `Promoter.watch_once` (every `canary_check_interval_s`) compares canary and stable from the
  monitor's ops API since the promotion (`services.finetune.canary`): a regression past a threshold
  publishes `ModelVersionRolledBack` (generators route back to stable; the version is unloaded after
  `retire_grace_s`); a canary as good after enough traffic at its share is widened to the next
  stage (`ModelVersionPromoted` with the larger share; the generators keep its requests on it), and
  after the last stage to the full rollout (`traffic_share=1.0`); its adapter then becomes "current"
  for the next job's gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import grpc
import tritonclient.grpc.aio as triton_aio
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.finetune.v1.events_pb2 import ModelVersionPromoted, ModelVersionRolledBack
from llmops.monitor.v1 import monitor_service_pb2 as monitor_pb
from llmops.monitor.v1 import monitor_service_pb2_grpc as monitor_grpc
from prometheus_client import Counter, Gauge
from tritonclient.utils import InferenceServerException

from services.finetune import model as base_models
from services.finetune.canary import (
    CanaryPolicy,
    Verdict,
    VersionStats,
    check_stages,
    decide,
    version_stats,
)
from services.finetune.files import fsync_dir, replace_file, staged_dir
from services.finetune.runner import RunResult
from services.finetune.store import (
    CANARY,
    FAILED,
    ROLLED_BACK,
    STABLE,
    SUPERSEDED,
    FinetuneStore,
    JobRecord,
    ModelVersionRecord,
)
from services.generator.llm import TritonLLM
from services.generator.routing import ModelTarget
from shared.events import new_meta
from shared.infra.paths import DEPLOY_DIR

log = logging.getLogger(__name__)

TEMPLATE_DIR = DEPLOY_DIR / "triton" / "templates" / "tiny_lora_lm"
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
SMOKE_PROMPT = (
    "Passages:\n[1] Kafka stores topics as partitions.\n\nQuestion: How are topics stored?\nAnswer:"
)

PROMOTIONS = Counter(
    "llmops_finetune_promotions_total", "Promotion steps by outcome.", ["outcome"]
)  # canary, full, rolled_back, refused, failed
CANARY_SHARE = Gauge(
    "llmops_finetune_canary_share",
    "Traffic share of the canary version (0: none), by rollout scope (a tenant, or 'all').",
    ["scope"],
)

PublishEvent = Callable[[str, Message, str], Awaitable[None]]  # (topic, event, key)


# --- the writable model repository -------------------------------------------------------------------


class ModelRepository:
    """One model's folder in Triton's writable model repository."""

    def __init__(self, root: Path, name: str, template: Path = TEMPLATE_DIR) -> None:
        if not MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} is not a valid Triton model name")
        self.root = root
        self.name = name
        self.template = template

    @property
    def model_dir(self) -> Path:
        return self.root / self.name

    def version_dir(self, version: int) -> Path:
        return self.model_dir / str(version)

    def versions(self) -> list[int]:
        """Complete versions Triton may load (numeric folder names), ascending."""
        if not self.model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in self.model_dir.iterdir() if p.is_dir() and p.name.isdigit())

    def next_version(self) -> int:
        """One above every number used so far, retired and failed versions included."""
        used = [0, *self.versions()]
        if self.model_dir.is_dir():
            for p in self.model_dir.iterdir():
                match = re.fullmatch(r"\.(?:retired|failed)-(\d+)", p.name)
                if match:
                    used.append(int(match.group(1)))
        return max(used) + 1

    def prepare(self) -> list[Path]:
        """Create the model folder and its config.pbtxt (atomically); remove `.tmp-*` leftovers of a
        crashed write. Returns the leftovers removed."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        config = (self.template / "config.pbtxt").read_text().replace("{name}", self.name)
        target = self.model_dir / "config.pbtxt"
        if not target.is_file() or target.read_text() != config:
            replace_file(target, config.encode())
        removed = []
        for leftover in self.model_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
        return removed

    def write_version(
        self,
        base_dir: Path,
        adapter_dir: Path | None,
        manifest: dict[str, Any],
        *,
        before_rename: Callable[[Path], None] | None = None,
    ) -> int:
        """Write the next version completely, then rename it into place; its number.
        `before_rename(staging)` runs just before the rename (tests use it to simulate a crash)."""
        self.prepare()
        version = self.next_version()
        with staged_dir(
            self.version_dir(version), label=str(version), exist_ok=False, before_rename=before_rename
        ) as staging:
            shutil.copy2(self.template / "model.py", staging / "model.py")
            shutil.copytree(base_dir, staging / "base", ignore=shutil.ignore_patterns("manifest.json"))
            if adapter_dir is not None:
                shutil.copytree(
                    adapter_dir,
                    staging / "adapter",
                    ignore=shutil.ignore_patterns("metrics.json", "job.json"),
                )
            described = {**manifest, "model_name": self.name, "version": version}
            (staging / "manifest.json").write_text(json.dumps(described, indent=2, sort_keys=True))
        return version

    def set_aside(self, version: int, kind: str) -> None:
        """Rename version N to `.<kind>-N` (retired, failed): Triton unloads it at the next load."""
        source = self.version_dir(version)
        if source.is_dir():
            target = self.model_dir / f".{kind}-{version}"
            if target.exists():
                shutil.rmtree(target)
            os.rename(source, target)
            fsync_dir(self.model_dir)

    def adapter_of(self, version: int) -> Path | None:
        adapter = self.version_dir(version) / "adapter"
        return adapter if adapter.is_dir() else None


# --- Triton's model control -----------------------------------------------------------------------------


class ModelControl(Protocol):
    async def load(self, model: str) -> None: ...

    async def ready(self, model: str, version: int) -> bool: ...

    async def smoke(self, model: str, version: int) -> str: ...

    async def close(self) -> None: ...


class TritonModelControl:
    """Triton's gRPC model-control API (explicit mode) and one smoke inference per new version."""

    def __init__(self, url: str, *, load_timeout_s: float = 180.0) -> None:
        self.url = url
        self.load_timeout_s = load_timeout_s
        self._client_: triton_aio.InferenceServerClient | None = None

    @property
    def _client(self) -> triton_aio.InferenceServerClient:
        # Created on first use, inside the running event loop (a grpc.aio channel is bound to it).
        if self._client_ is None:
            self._client_ = triton_aio.InferenceServerClient(self.url)
        return self._client_

    async def load(self, model: str) -> None:
        """Load (or reload) every complete version of `model`; versions removed since are unloaded,
        unchanged ones keep serving."""
        await self._client.load_model(model, client_timeout=self.load_timeout_s)

    async def ready(self, model: str, version: int) -> bool:
        return bool(await self._client.is_model_ready(model, str(version)))

    async def smoke(self, model: str, version: int) -> str:
        llm = TritonLLM(self.url)
        try:
            pieces = [
                piece
                async for piece in llm.stream(
                    ModelTarget(model, str(version)), SMOKE_PROMPT, max_tokens=4, timeout_s=60.0
                )
            ]
        finally:
            await llm.close()
        return "".join(pieces)

    async def close(self) -> None:
        if self._client_ is not None:
            await self._client_.close()
            self._client_ = None


# --- the monitor's view of a version ---------------------------------------------------------------------


class VersionMonitor(Protocol):
    async def stats(
        self, tenant_id: str, since_ms: int, model: str, versions: list[str]
    ) -> dict[str, VersionStats]: ...


class MonitorClient:
    """Per-version stats from the monitor's ops API (ListRequests and GetFeedbackSummary)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def stats(
        self, tenant_id: str, since_ms: int, model: str, versions: list[str]
    ) -> dict[str, VersionStats]:
        start = Timestamp()
        start.FromMilliseconds(since_ms)
        window = monitor_pb.TimeWindow(start=start)
        async with grpc.aio.insecure_channel(self.url) as channel:
            stub = monitor_grpc.MonitorServiceStub(channel)
            listed = await stub.ListRequests(
                monitor_pb.ListRequestsRequest(tenant_id=tenant_id, window=window, limit=1000),
                timeout=self.timeout_s,
            )
            summary = await stub.GetFeedbackSummary(
                monitor_pb.GetFeedbackSummaryRequest(tenant_id=tenant_id, window=window),
                timeout=self.timeout_s,
            )
            # Every request of the window counted per version (ListRequests is the newest 1,000 only:
            # at a 0.1 share that would never reach a stage's request count).
            counted = await stub.GetTraffic(
                monitor_pb.GetTrafficRequest(tenant_id=tenant_id, window=window, bucket_seconds=86_400),
                timeout=self.timeout_s,
            )
        requests = [
            {
                "model_name": r.model_name,
                "model_version": r.model_version,
                "failed": r.status == monitor_pb.REQUEST_STATUS_FAILED,
                "groundedness": r.groundedness if r.HasField("groundedness") else None,
            }
            for r in listed.requests
        ]
        feedback = [
            {
                "model_name": m.model_name,
                "model_version": m.model_version,
                "total": m.counts.total,
                "down": m.counts.down,
                "rated": m.counts.rated,
                "mean_rating": m.counts.mean_rating,
            }
            for m in summary.models
        ]
        traffic = [
            {
                "model_name": m.model_name,
                "model_version": m.model_version,
                "requests": m.requests,
                "failed": m.failed,
            }
            for m in counted.models
        ]
        return {v: version_stats(requests, feedback, model, v, traffic) for v in versions}


# --- the promoter -----------------------------------------------------------------------------------------


async def _ensure_base_model_in_subprocess(models_dir: Path, threads: int) -> Path:
    """The cached base model; built in a child process when missing (the service never loads torch)."""
    folder = base_models.base_model_dir(models_dir)
    if (folder / "manifest.json").is_file():
        return folder
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from pathlib import Path; from services.finetune.model import ensure_base_model; "
        "ensure_base_model(Path(sys.argv[1]), threads=int(sys.argv[2]))",
        str(models_dir),
        str(threads),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0 or not (folder / "manifest.json").is_file():
        raise RuntimeError(f"building the base model failed: {output.decode(errors='replace')[-500:]}")
    return folder


class Promoter:
    def __init__(
        self,
        store: FinetuneStore,
        repository: ModelRepository,
        control: ModelControl,
        monitor: VersionMonitor,
        publish: PublishEvent,
        *,
        models_dir: Path,
        canary_stages: Sequence[float],
        policy: CanaryPolicy,
        scope: Literal["tenant", "all"] = "tenant",
        producer: str,
        promoted_topic: str,
        rolled_back_topic: str,
        retire_grace_s: float = 30.0,
        threads: int = 2,
    ) -> None:
        self.stages = check_stages(canary_stages)
        self.scope = scope
        self.store = store
        self.repository = repository
        self.control = control
        self.monitor = monitor
        self.publish = publish
        self.models_dir = models_dir
        self.policy = policy
        self.producer = producer
        self.promoted_topic = promoted_topic
        self.rolled_back_topic = rolled_back_topic
        self.retire_grace_s = retire_grace_s
        self.threads = threads
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.bootstrapped = asyncio.Event()

    @property
    def model(self) -> str:
        return self.repository.name

    # --- state ------------------------------------------------------------------------------------

    def scope_of(self, tenant_id: str) -> str:
        """Whose traffic a version trained on `tenant_id`'s data moves: that tenant's ("tenant" scope:
        one tenant's fine-tuned model never answers another tenant), or everyone's ("")."""
        return tenant_id if self.scope == "tenant" else ""

    def _versions(self, state: str, scope: str) -> list[ModelVersionRecord]:
        return [
            v for v in self.store.versions(self.model, states=(state,)) if self.scope_of(v.tenant_id) == scope
        ]

    def stable(self, scope: str = "") -> ModelVersionRecord | None:
        """The version serving `scope` ("" everyone): its own stable version, else the global one."""
        found = self._versions(STABLE, scope)
        if found:
            return found[0]
        return self.stable("") if scope else None

    def canary(self, scope: str = "") -> ModelVersionRecord | None:
        found = self._versions(CANARY, scope)
        return found[0] if found else None

    def current_adapter(self, tenant_id: str) -> str:
        """The adapter of the version serving the tenant ("" = the base model): what its next job must
        beat."""
        stable = self.stable(self.scope_of(tenant_id))
        return stable.adapter_dir if stable is not None else ""

    # --- start: version 1 and Triton ---------------------------------------------------------------

    async def bootstrap(self) -> None:
        """Make sure the model folder, version 1 (the base model) and the stable record exist, and
        load the model into Triton (retried until Triton answers)."""
        removed = await asyncio.to_thread(self.repository.prepare)
        if removed:
            log.warning("removed half-written versions", extra={"paths": [str(p) for p in removed]})
        if not self.repository.versions():
            base = await _ensure_base_model_in_subprocess(self.models_dir, self.threads)
            version = await asyncio.to_thread(
                self.repository.write_version, base, None, {"base_model": base.name, "job_id": ""}
            )
            log.info("base version written", extra={"model": self.model, "version": version})
        if self.stable() is None:
            first = self.repository.versions()[0]
            self.store.save_version(ModelVersionRecord(self.model, first, STABLE, 1.0))
        delay = 1.0
        while True:
            try:
                await self.control.load(self.model)
                break
            except (InferenceServerException, grpc.aio.AioRpcError, OSError) as exc:
                log.warning(
                    "Triton not ready to load the model; retrying",
                    extra={"model": self.model, "error": str(exc)[:300]},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for canary in self.store.versions(self.model, states=(CANARY,)):
            self._set_canary_gauge(canary, canary.traffic_share)
        self.bootstrapped.set()
        log.info("serving model loaded", extra={"model": self.model, "versions": self.repository.versions()})

    # --- promotion ---------------------------------------------------------------------------------

    async def on_succeeded(self, job: JobRecord, result: RunResult) -> None:
        """The scheduler's hook: promote the job's adapter when the gate passed it."""
        if not result.gate.get("promote"):
            log.info("gate kept current: not promoted", extra={"job_id": job.job_id})
            return
        await self.bootstrapped.wait()
        async with self._lock:
            await self._promote(job, result)

    async def _promote(self, job: JobRecord, result: RunResult) -> ModelVersionRecord | None:
        scope = self.scope_of(job.tenant_id)
        active = self.canary(scope)
        if active is not None:
            PROMOTIONS.labels("refused").inc()
            log.warning(
                "promotion refused: a canary is still being watched",
                extra={"job_id": job.job_id, "canary_version": active.version},
            )
            return None
        stable = self.stable(scope)
        base = await _ensure_base_model_in_subprocess(self.models_dir, self.threads)
        adapter = Path(result.artifact_dir)
        manifest = {"job_id": job.job_id, "tenant_id": job.tenant_id, "base_model": base.name}
        version = await asyncio.to_thread(self.repository.write_version, base, adapter, manifest)
        try:
            await self.control.load(self.model)
            if not await self.control.ready(self.model, version):
                raise RuntimeError(f"version {version} is not READY after loading")
            sample = await self.control.smoke(self.model, version)
        except Exception as exc:
            PROMOTIONS.labels("failed").inc()
            log.exception("new version failed to load or answer", extra={"version": version})
            await asyncio.to_thread(self.repository.set_aside, version, "failed")
            with contextlib.suppress(Exception):
                await self.control.load(self.model)  # unloads the failed version
            self.store.save_version(
                ModelVersionRecord(
                    self.model, version, FAILED, 0.0, job.job_id, job.tenant_id, "", f"{exc!r}"[:500]
                )
            )
            return None
        full = not self.stages
        share = 1.0 if full else self.stages[0]
        record = ModelVersionRecord(
            self.model,
            version,
            STABLE if full else CANARY,
            share,
            job.job_id,
            job.tenant_id,
            str(self.repository.adapter_of(version) or ""),
        )
        if full:
            self._supersede(stable, scope)
        self.store.save_version(record)
        await self._publish_promoted(record, stable, job.metrics)
        PROMOTIONS.labels("full" if full else "canary").inc()
        self._set_canary_gauge(record, 0.0 if full else share)
        log.info(
            "version promoted",
            extra={
                "model": self.model,
                "version": version,
                "traffic_share": share,
                "job_id": job.job_id,
                "smoke_output": sample[:80],
            },
        )
        return record

    def _set_canary_gauge(self, version: ModelVersionRecord, share: float) -> None:
        CANARY_SHARE.labels(self.scope_of(version.tenant_id) or "all").set(share)

    def _supersede(self, previous: ModelVersionRecord | None, scope: str) -> None:
        """The full rollout in `scope` retires the version that served it there; a global version
        that served the tenant only as the fallback keeps serving everyone else."""
        if previous is not None and self.scope_of(previous.tenant_id) == scope:
            previous.state, previous.traffic_share = SUPERSEDED, 0.0
            self.store.save_version(previous)

    async def _publish_promoted(
        self,
        record: ModelVersionRecord,
        previous: ModelVersionRecord | None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        event = ModelVersionPromoted(
            meta=new_meta(
                tenant_id=record.tenant_id, producer=self.producer, correlation_id=record.job_id or None
            ),
            model_name=self.model,
            model_version=str(record.version),
            previous_version=str(previous.version) if previous else "",
            traffic_share=record.traffic_share,
            job_id=record.job_id,
            eval_metrics={k: v for k, v in (metrics or {}).items() if k.startswith(("heldout_", "gate_"))},
            scope_tenant_id=self.scope_of(record.tenant_id),
        )
        await self.publish(self.promoted_topic, event, self.model)

    # --- the canary watch -----------------------------------------------------------------------------

    async def watch_once(self) -> list[Verdict]:
        """Compare every canary with the stable version of its scope once and act on the verdicts."""
        async with self._lock:
            verdicts = []
            for canary in self.store.versions(self.model, states=(CANARY,)):
                stable = self.stable(self.scope_of(canary.tenant_id))
                if stable is not None:
                    verdicts.append(await self._check(canary, stable))
            return verdicts

    async def _check(self, canary: ModelVersionRecord, stable: ModelVersionRecord) -> Verdict:
        """Canary vs stable on the canary's tenant's traffic (its statistics come from the monitor)."""
        versions = [str(canary.version), str(stable.version)]
        stats = await self.monitor.stats(canary.tenant_id, canary.promoted_ms, self.model, versions)
        # Evidence to widen counts from when the current share began (the promotion, at first).
        at_share = await self.monitor.stats(canary.tenant_id, canary.updated_ms, self.model, versions[:1])
        verdict = decide(stats[versions[0]], stats[versions[1]], self.policy, at_share[versions[0]])
        log.info(
            "canary checked",
            extra={
                "model": self.model,
                "canary": canary.version,
                "share": canary.traffic_share,
                "stable": stable.version,
                "action": verdict.action,
                "reasons": verdict.summary,
            },
        )
        if verdict.action == "rollback":
            await self._rollback(canary, stable, verdict.summary)
        elif verdict.action == "widen":
            await self._widen(canary, stable)
        return verdict

    async def _rollback(self, canary: ModelVersionRecord, stable: ModelVersionRecord, reason: str) -> None:
        canary.state, canary.traffic_share, canary.reason = ROLLED_BACK, 0.0, reason
        self.store.save_version(canary)
        event = ModelVersionRolledBack(
            meta=new_meta(
                tenant_id=canary.tenant_id, producer=self.producer, correlation_id=canary.job_id or None
            ),
            model_name=self.model,
            model_version=str(canary.version),
            restored_version=str(stable.version),
            reason=reason,
            scope_tenant_id=self.scope_of(canary.tenant_id),
        )
        await self.publish(self.rolled_back_topic, event, self.model)
        PROMOTIONS.labels("rolled_back").inc()
        self._set_canary_gauge(canary, 0.0)
        log.warning(
            "canary rolled back",
            extra={
                "model": self.model,
                "version": canary.version,
                "restored": stable.version,
                "reason": reason,
            },
        )
        task = asyncio.create_task(self._retire_later(canary.version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire_later(self, version: int) -> None:
        """Unload a rolled-back version once the generators had time to route away from it."""
        await asyncio.sleep(self.retire_grace_s)
        async with self._lock:
            await asyncio.to_thread(self.repository.set_aside, version, "retired")
            try:
                await self.control.load(self.model)
            except Exception:
                log.exception("reloading after retiring a version failed", extra={"version": version})
            else:
                log.info("rolled-back version unloaded", extra={"model": self.model, "version": version})

    async def _widen(self, canary: ModelVersionRecord, stable: ModelVersionRecord) -> None:
        """The next stage's share, or the full rollout after the last stage."""
        larger = [share for share in self.stages if share > canary.traffic_share]
        if larger:
            canary.traffic_share = larger[0]
            self.store.save_version(canary)  # updated_ms: when this share began
            await self._publish_promoted(canary, stable)
            PROMOTIONS.labels("widened").inc()
            self._set_canary_gauge(canary, canary.traffic_share)
            log.info(
                "canary widened to the next stage",
                extra={"model": self.model, "version": canary.version, "traffic_share": canary.traffic_share},
            )
            return
        self._supersede(stable, self.scope_of(canary.tenant_id))
        canary.state, canary.traffic_share = STABLE, 1.0
        self.store.save_version(canary)
        await self._publish_promoted(canary, stable)
        PROMOTIONS.labels("full").inc()
        self._set_canary_gauge(canary, 0.0)
        log.info("canary widened to the full rollout", extra={"model": self.model, "version": canary.version})

    async def watch(self, interval_s: float) -> None:
        """The canary watch loop (a task of the service)."""
        await self.bootstrapped.wait()
        while True:
            try:
                await self.watch_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("canary check failed; trying again next interval")
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.control.close()
