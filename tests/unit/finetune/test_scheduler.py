"""The scheduler with a fake runner: triggers -> dataset -> job -> lifecycle events, failures, restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, JobState, JobTrigger

from services.finetune import train
from services.finetune.curation import Answered, Feedback
from services.finetune.jobs import JobSpec
from services.finetune.runner import RunResult
from services.finetune.scheduler import NothingToTrain, Scheduler
from services.finetune.settings import FinetuneSettings
from services.finetune.store import FinetuneStore, JobRecord
from services.finetune.triggers import PendingAlert

REPO = Path(__file__).resolve().parents[3]


class FakeRunner:
    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.specs: list[JobSpec] = []

    async def run(self, spec: JobSpec, on_started: Any = None) -> RunResult:
        self.specs.append(spec)
        if on_started is not None:
            await on_started()
        return self.result


def make(
    tmp_path: Path, result: RunResult, **overrides: Any
) -> tuple[Scheduler, FinetuneStore, list[FineTuneJobUpdated], FakeRunner]:
    settings = FinetuneSettings(
        data_dir=tmp_path,
        models_dir=tmp_path / "models",
        dedup_backend="none",
        tick_interval_s=0.05,
        **overrides,
    )
    store = FinetuneStore(None)
    events: list[FineTuneJobUpdated] = []

    async def publish(event: FineTuneJobUpdated) -> None:
        events.append(event)

    runner = FakeRunner(result)
    return Scheduler(settings, store, runner, publish, embed_factory=lambda: None), store, events, runner


def answers(n: int, tenant: str = "t1") -> list[Answered]:
    at = int(time.time() * 1000)
    return [
        Answered(tenant, f"c{i}", f"question {i}?", f"answer {i}.", ("ctx",), 0.9, at + i) for i in range(n)
    ]


async def wait_for_state(events: list[FineTuneJobUpdated], state: int) -> None:
    for _ in range(200):
        if any(e.state == state for e in events):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no event in state {state}: {events}")


async def test_new_examples_trigger_a_job_with_its_lifecycle(tmp_path: Path) -> None:
    ok = RunResult(
        True, metrics={"gate_promote": 1.0}, artifact_dir=str(tmp_path / "a" / "x"), base_model="base-1"
    )
    scheduler, store, events, runner = make(tmp_path, ok, min_new_examples=5)
    store.add_answers(answers(4))
    assert await scheduler.tick(time.time()) == []
    store.add_answers(answers(6))
    await scheduler.start()
    try:
        await wait_for_state(events, JobState.JOB_STATE_SUCCEEDED)
    finally:
        await scheduler.stop()
    assert [e.state for e in events] == [
        JobState.JOB_STATE_SCHEDULED,
        JobState.JOB_STATE_RUNNING,
        JobState.JOB_STATE_SUCCEEDED,
    ]
    done = events[-1]
    assert done.trigger == JobTrigger.JOB_TRIGGER_NEW_EXAMPLES and done.meta.tenant_id == "t1"
    assert done.metrics["gate_promote"] == 1.0 and done.metrics["dataset_train_examples"] > 0
    assert done.artifact_uri.startswith("file://") and done.base_model == "base-1"
    assert done.parameters["rank"] == "8" and "trigger_detail" in done.parameters
    (dataset,) = store.datasets("t1")
    assert dataset.version == done.dataset_version
    assert (tmp_path / "datasets" / "t1" / dataset.version / "manifest.json").is_file()
    assert runner.specs[0].dataset_dir.endswith(dataset.version)
    assert scheduler.tenant_state("t1").new_examples == 0  # counted as used by that job


async def test_a_failed_run_is_published_with_its_reason(tmp_path: Path) -> None:
    scheduler, store, events, _ = make(tmp_path, RunResult(False, error="trainer killed by signal SIGKILL"))
    store.add_answers(answers(3))
    await scheduler.start()
    try:
        job, _ = await scheduler.trigger_manual("t1", {"epochs": "1"})
        await wait_for_state(events, JobState.JOB_STATE_FAILED)
    finally:
        await scheduler.stop()
    assert events[-1].error == "trainer killed by signal SIGKILL"
    assert events[-1].trigger == JobTrigger.JOB_TRIGGER_MANUAL
    stored = store.job(job.job_id)
    assert stored is not None and stored.state == JobState.JOB_STATE_FAILED


async def test_manual_trigger_refuses_bad_parameters_and_empty_data(tmp_path: Path) -> None:
    scheduler, store, events, _ = make(tmp_path, RunResult(True))
    with pytest.raises(NothingToTrain):
        await scheduler.trigger_manual("t1", {})
    store.add_answers(answers(3))
    with pytest.raises(ValueError, match="unknown training parameter"):
        await scheduler.trigger_manual("t1", {"nope": "1"})
    assert events == []


async def test_quality_alert_triggers_once(tmp_path: Path) -> None:
    scheduler, store, _, _ = make(
        tmp_path, RunResult(True), alert_min_examples=2, min_new_examples=0, cooldown_s=0
    )
    store.add_answers(answers(3))
    store.add_feedback([Feedback("t1", "c0", "e1", 2, 0, "", int(time.time() * 1000))])
    store.add_alert("a1", "t1", PendingAlert("groundedness", 0.2, 0.5, 1.0))
    (job,) = await scheduler.tick(time.time())
    assert job.trigger == JobTrigger.JOB_TRIGGER_QUALITY_ALERT
    assert store.pending_alerts("t1") == []
    store.save_job(JobRecord(**{**job.__dict__, "state": JobState.JOB_STATE_SUCCEEDED}))
    assert await scheduler.tick(time.time()) == []  # the alert was answered


async def test_restart_fails_running_jobs_and_requeues_scheduled_ones(tmp_path: Path) -> None:
    scheduler, store, events, runner = make(tmp_path, RunResult(True))
    store.add_answers(answers(3))
    decision = scheduler.triggers.decide(scheduler.tenant_state("t1", manual=True), 0)
    assert decision is not None
    job, _ = await scheduler.schedule("t1", decision, {})
    running = JobRecord(**{**job.__dict__, "job_id": "ft-old", "state": JobState.JOB_STATE_RUNNING})
    store.save_job(running)
    restarted = Scheduler(scheduler.settings, store, runner, scheduler.publish, embed_factory=lambda: None)
    await restarted.start()
    try:
        await wait_for_state(events, JobState.JOB_STATE_SUCCEEDED)
    finally:
        await restarted.stop()
    old = store.job("ft-old")
    assert old is not None and old.state == JobState.JOB_STATE_FAILED and "interrupted" in old.error
    again = store.job(job.job_id)
    assert again is not None and again.state == JobState.JOB_STATE_SUCCEEDED


def test_kubernetes_job_template_runs_the_trainer() -> None:
    text = (REPO / "deploy" / "k8s" / "finetune-job.yaml").read_text()
    job = yaml.safe_load(text.replace("${JOB_ID}", "ft-0123456789ab").replace("${TENANT_ID}", "demo"))
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "services.finetune.train"]
    assert train.__name__ == "services.finetune.train"
    args = container["args"]
    assert args[args.index("--spec") + 1].startswith("/etc/llmops/finetune/")
    assert "ft-0123456789ab" in args[args.index("--result") + 1]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == mounts
