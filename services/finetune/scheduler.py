"""The scheduler: trigger policies -> curated dataset version -> job -> runner, with lifecycle events.

Every `tick_interval_s` each tenant's state (qualifying examples, the last job, pending quality alerts)
goes through the trigger policies (`services.finetune.triggers`); a manual request (gRPC TriggerJob)
takes the same path at once. Scheduling a job curates the tenant's dataset (in a worker thread: PII
scrubbing and embeddings), writes the version (or finds it written already), records the job and
publishes FineTuneJobUpdated(SCHEDULED). One worker runs the queued jobs one at a time: RUNNING when
the trainer started, then SUCCEEDED with the training and evaluation metrics and the artifact, or
FAILED with the reason. Jobs left SCHEDULED by a previous process are queued again at start; jobs it
left RUNNING are failed ("interrupted"), since their trainer died with it.

Promotion hooks (`services.finetune.promotion.Promoter`): `on_succeeded` receives each succeeded job
with the gate's decision (Triton model version, routing canary, rollback) and `adapter_of` says which
adapter serves stable now (what the next candidate is compared with).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, JobState, JobTrigger
from prometheus_client import Counter, Gauge

from services.finetune import model as base_models
from services.finetune.curation import Dataset, Embed, curate, select_examples, write_dataset
from services.finetune.jobs import JobSpec, parse_params
from services.finetune.runner import JobRunner, RunResult
from services.finetune.settings import FinetuneSettings
from services.finetune.store import DatasetRecord, FinetuneStore, JobRecord, now_ms
from services.finetune.triggers import Decision, TenantState
from shared.events import new_meta

log = logging.getLogger(__name__)

JOBS = Counter(
    "llmops_finetune_jobs_total", "Fine-tune jobs by final state and trigger.", ["state", "trigger"]
)
DATASETS = Counter("llmops_finetune_datasets_total", "Dataset versions written.")
QUEUED = Gauge("llmops_finetune_jobs_queued", "Jobs scheduled and not yet running.")

Publish = Callable[[FineTuneJobUpdated], Awaitable[None]]
ACTIVE_STATES = (JobState.JOB_STATE_SCHEDULED, JobState.JOB_STATE_RUNNING)


def artifact_uri(path: str) -> str:
    return Path(os.path.abspath(path)).as_uri() if path else ""


class NothingToTrain(Exception):
    """No curated example qualifies for the tenant (FAILED_PRECONDITION for a manual trigger)."""


def job_event(job: JobRecord, *, producer: str) -> FineTuneJobUpdated:
    return FineTuneJobUpdated(
        meta=new_meta(tenant_id=job.tenant_id, producer=producer, correlation_id=job.job_id),
        job_id=job.job_id,
        state=job.state,  # type: ignore[arg-type]
        trigger=job.trigger,  # type: ignore[arg-type]
        base_model=job.base_model,
        dataset_version=job.dataset_version,
        parameters=job.parameters,
        metrics={k: v for k, v in job.metrics.items() if math.isfinite(v)},
        artifact_uri=job.artifact_uri,
        error=job.error,
    )


class Scheduler:
    def __init__(
        self,
        settings: FinetuneSettings,
        store: FinetuneStore,
        runner: JobRunner,
        publish: Publish,
        *,
        embed_factory: Callable[[], Embed | None],
        on_succeeded: Callable[[JobRecord, RunResult], Awaitable[None]] | None = None,
        adapter_of: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runner = runner
        self.publish = publish
        self.embed_factory = embed_factory
        self.on_succeeded = on_succeeded
        self.adapter_of = adapter_of
        self.policy = settings.curation_policy()
        self.triggers = settings.trigger_policies()
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._schedule_lock = asyncio.Lock()
        self._embed: Embed | None = None
        self._embed_loaded = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        for job in self.store.jobs(states=(JobState.JOB_STATE_RUNNING,), limit=10_000):
            await self._finish(job, RunResult(False, error="interrupted: the scheduler stopped while it ran"))
        for job in reversed(self.store.jobs(states=(JobState.JOB_STATE_SCHEDULED,), limit=10_000)):
            self.queue.put_nowait(job.job_id)
        QUEUED.set(self.queue.qsize())
        self._tasks = [asyncio.create_task(self._worker()), asyncio.create_task(self._ticker())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _ticker(self) -> None:
        while True:
            try:
                await self.tick(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trigger evaluation failed; trying again next tick")
            await asyncio.sleep(self.settings.tick_interval_s)

    async def _worker(self) -> None:
        while True:
            job_id = await self.queue.get()
            QUEUED.set(self.queue.qsize())
            job = self.store.job(job_id)
            if job is None or job.state != JobState.JOB_STATE_SCHEDULED:
                continue
            try:
                await self._execute(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("job failed in the scheduler", extra={"job_id": job_id})
                await self._finish(job, RunResult(False, error=f"scheduler error: {exc!r}"))

    # --- triggers ---------------------------------------------------------------------------------

    def qualifying_examples(self, tenant_id: str) -> int:
        selected, _ = select_examples(
            self.store.answers(tenant_id), self.store.feedback(tenant_id), self.policy
        )
        return len(selected)

    def tenant_state(self, tenant_id: str, *, manual: bool = False) -> TenantState:
        row = next((t for t in self.store.tenants() if t[0] == tenant_id), None)
        first_seen_ms, at_last_job, last_job_ms = (row[1], row[2], row[3]) if row else (now_ms(), 0, None)
        return TenantState(
            tenant_id=tenant_id,
            qualifying_examples=self.qualifying_examples(tenant_id),
            examples_at_last_job=at_last_job,
            last_job_at=last_job_ms / 1000 if last_job_ms is not None else None,
            first_seen_at=first_seen_ms / 1000,
            job_active=bool(self.store.jobs(tenant_id, states=ACTIVE_STATES, limit=1)),
            manual_requested=manual,
            alerts=tuple(self.store.pending_alerts(tenant_id)),
        )

    async def tick(self, now: float) -> list[JobRecord]:
        """Evaluate every tenant's triggers once; the jobs scheduled."""
        self.store.prune(int((now - self.settings.retention_days * 86400) * 1000))
        scheduled = []
        for tenant_id, *_ in self.store.tenants():
            decision = self.triggers.decide(self.tenant_state(tenant_id), now)
            if decision is None:
                continue
            try:
                job, _ = await self.schedule(tenant_id, decision, {})
            except NothingToTrain:
                continue
            scheduled.append(job)
        return scheduled

    async def trigger_manual(
        self, tenant_id: str, overrides: dict[str, str]
    ) -> tuple[JobRecord, DatasetRecord]:
        """Schedule a job now (ValueError: bad parameters; NothingToTrain: no example qualifies)."""
        parse_params(self.settings.training_params(), overrides)  # fail fast, before curating
        decision = Decision(JobTrigger.JOB_TRIGGER_MANUAL, "requested by an operator")
        return await self.schedule(tenant_id, decision, overrides)

    # --- scheduling ---------------------------------------------------------------------------------

    def _embedder(self) -> Embed | None:
        if not self._embed_loaded:
            self._embed = self.embed_factory()
            self._embed_loaded = True
        return self._embed

    def _curate(self, tenant_id: str, parent: str) -> tuple[Dataset, int]:
        answers, feedback = self.store.answers(tenant_id), self.store.feedback(tenant_id)
        qualifying = len(select_examples(answers, feedback, self.policy)[0])
        dataset, stats = curate(
            tenant_id, answers, feedback, self.policy, self._embedder(), parent_version=parent
        )
        log.info(
            "dataset curated",
            extra={
                "tenant_id": tenant_id,
                "version": dataset.version,
                "train": len(dataset.train),
                "eval": len(dataset.eval),
                "duplicates_removed": stats.duplicates_removed,
                "pii_replacements": sum(stats.pii_replacements.values()),
            },
        )
        return dataset, qualifying

    async def schedule(
        self, tenant_id: str, decision: Decision, overrides: dict[str, str]
    ) -> tuple[JobRecord, DatasetRecord]:
        params = parse_params(self.settings.training_params(), overrides)
        async with self._schedule_lock:
            if decision.trigger != JobTrigger.JOB_TRIGGER_MANUAL and self.store.jobs(
                tenant_id, states=ACTIVE_STATES, limit=1
            ):
                raise NothingToTrain(f"a job of {tenant_id} is already active")
            previous = self.store.datasets(tenant_id, limit=1)
            parent = previous[0].version if previous else ""
            dataset, qualifying = await asyncio.to_thread(self._curate, tenant_id, parent)
            if not dataset.train:
                raise NothingToTrain(f"no curated training example for tenant {tenant_id}")
            record = self.store.dataset(tenant_id, dataset.version)
            if record is None:
                folder = await asyncio.to_thread(write_dataset, dataset, self.settings.datasets_dir)
                record = DatasetRecord(
                    tenant_id=tenant_id,
                    version=dataset.version,
                    parent_version=parent if parent != dataset.version else "",
                    train_examples=len(dataset.train),
                    eval_examples=len(dataset.eval),
                    sources=dict(dataset.manifest["sources"]),
                    uri=folder.resolve().as_uri(),
                    created_ms=now_ms(),
                )
                self.store.save_dataset(record)
                DATASETS.inc()
            job = JobRecord(
                job_id=f"ft-{uuid.uuid4().hex[:12]}",
                tenant_id=tenant_id,
                state=JobState.JOB_STATE_SCHEDULED,
                trigger=decision.trigger,
                trigger_detail=decision.detail,
                base_model=base_models.base_model_dir(self.settings.models_dir).name,
                dataset_version=dataset.version,
                parameters={**params.as_strings(), "trigger_detail": decision.detail},
                metrics={
                    "dataset_train_examples": float(len(dataset.train)),
                    "dataset_eval_examples": float(len(dataset.eval)),
                },
            )
            self.store.save_job(job)
            self.store.mark_job_started(tenant_id, qualifying, job.created_ms)
            if decision.trigger == JobTrigger.JOB_TRIGGER_QUALITY_ALERT:
                self.store.consume_alerts(tenant_id, job.job_id)
            await self.publish(job_event(job, producer=self.settings.service_name))
            self.queue.put_nowait(job.job_id)
            QUEUED.set(self.queue.qsize())
        log.info(
            "job scheduled",
            extra={
                "job_id": job.job_id,
                "tenant_id": tenant_id,
                "trigger": decision.trigger_name,
                "detail": decision.detail,
            },
        )
        return job, record

    # --- execution ----------------------------------------------------------------------------------

    def current_adapter(self, tenant_id: str) -> str:
        """The adapter serving the tenant now ("" = the base model), as the promoter knows it."""
        return self.adapter_of(tenant_id) if self.adapter_of is not None else ""

    def spec_for(self, job: JobRecord) -> JobSpec:
        params = {k: v for k, v in job.parameters.items() if k != "trigger_detail"}
        return JobSpec(
            job_id=job.job_id,
            tenant_id=job.tenant_id,
            dataset_dir=str(self.settings.datasets_dir / job.tenant_id / job.dataset_version),
            artifacts_dir=str(self.settings.artifacts_dir / job.tenant_id),
            models_dir=str(self.settings.models_dir),
            current_adapter=self.current_adapter(job.tenant_id),
            params=parse_params(self.settings.training_params(), params),
            gate=self.settings.gate_config(),
        )

    async def _execute(self, job: JobRecord) -> None:
        spec = self.spec_for(job)

        async def started() -> None:
            job.state = JobState.JOB_STATE_RUNNING
            self.store.save_job(job)
            await self.publish(job_event(job, producer=self.settings.service_name))
            log.info("job running", extra={"job_id": job.job_id, "tenant_id": job.tenant_id})

        result = await self.runner.run(spec, started)
        await self._finish(job, result)

    async def _finish(self, job: JobRecord, result: RunResult) -> None:
        if result.succeeded:
            job.state = JobState.JOB_STATE_SUCCEEDED
            job.metrics = {**job.metrics, **result.metrics}
            job.artifact_uri = artifact_uri(result.artifact_dir)
            job.base_model = result.base_model or job.base_model
            job.error = ""
        else:
            job.state = JobState.JOB_STATE_FAILED
            job.error = result.error or "failed"
        self.store.save_job(job)
        await self.publish(job_event(job, producer=self.settings.service_name))
        JOBS.labels(JobState.Name(job.state), JobTrigger.Name(job.trigger)).inc()
        log.info(
            "job finished",
            extra={"job_id": job.job_id, "state": JobState.Name(job.state), "error": job.error},
        )
        if result.succeeded and self.on_succeeded is not None:
            try:
                await self.on_succeeded(job, result)
            except asyncio.CancelledError:
                raise
            except Exception:  # the job stays SUCCEEDED; the promotion step logs and counts its failure
                log.exception("promotion of a succeeded job failed", extra={"job_id": job.job_id})
