"""`llmops finetune trigger|jobs|datasets`: the fine-tune scheduler's ops API from the command line."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import grpc
from llmops.finetune.v1 import finetune_service_pb2 as pb
from llmops.finetune.v1 import finetune_service_pb2_grpc as finetune_grpc
from llmops.finetune.v1.events_pb2 import JobState, JobTrigger

from services.cli.query import CallFailed, describe

DEFAULT_TARGET = "127.0.0.1:50056"
# Metrics `llmops finetune jobs` shows, when a job has them.
SHOWN_METRICS = (
    "train_tokens_per_s",
    "heldout_candidate_eval_loss",
    "heldout_current_eval_loss",
    "heldout_candidate_answer_f1",
    "heldout_current_answer_f1",
    "gate_promote",
)


def _stub(channel: grpc.aio.Channel) -> Any:
    # Typed as Any whether or not mypy follows the generated (untyped) *_pb2_grpc module.
    stub_class: Any = finetune_grpc.FineTuneServiceStub
    return stub_class(channel)


def parse_parameters(items: Sequence[str]) -> dict[str, str]:
    """`key=value` strings as a dict (ValueError on a malformed item)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"parameter {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _state(value: int) -> str:
    return str(JobState.Name(value)).removeprefix("JOB_STATE_").lower()


def _trigger(value: int) -> str:
    return str(JobTrigger.Name(value)).removeprefix("JOB_TRIGGER_").lower()


def format_levers(metrics: Mapping[str, float]) -> str:
    """The job's lever deltas (`lever_<system>_<metric>_delta`): each prompt template the current model
    was also evaluated with, and the fine-tuned candidate, e.g.
    ``current_grounded_qa_v2: answer_f1 +0.0000 eval_loss -0.0022; candidate: ...``."""
    systems: dict[str, list[str]] = {}
    for name, value in sorted(metrics.items()):
        if not (name.startswith("lever_") and name.endswith("_delta")):
            continue
        for metric in ("answer_f1", "eval_loss"):
            suffix = f"_{metric}_delta"
            if name.endswith(suffix):
                system = name.removeprefix("lever_").removesuffix(suffix)
                systems.setdefault(system, []).append(f"{metric} {value:+.4f}")
    # Prompt templates first, the fine-tuned candidate last.
    order = sorted(systems, key=lambda system: (system == "candidate", system))
    return "; ".join(f"{system}: {' '.join(systems[system])}" for system in order)


def format_job(job: pb.Job) -> str:
    line = (
        f"{job.job_id}  {_state(job.state):9s}  {_trigger(job.trigger):13s}  dataset {job.dataset_version}  "
        f"{job.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}"
    )
    metrics = "  ".join(f"{name}={job.metrics[name]:.4g}" for name in SHOWN_METRICS if name in job.metrics)
    if metrics:
        line += f"\n    {metrics}"
    levers = format_levers(job.metrics)
    if levers:
        line += f"\n    levers on the held-out set, from current: {levers}"
    if job.error:
        line += f"\n    error: {job.error}"
    if job.artifact_uri:
        line += f"\n    artifact: {job.artifact_uri}"
    return line


async def trigger(
    *, target: str, tenant_id: str, parameters: dict[str, str] | None = None, out: TextIO = sys.stdout
) -> pb.TriggerJobResponse:
    """Curate a dataset now and schedule a job on it; prints the job and the dataset version."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        try:
            response: pb.TriggerJobResponse = await stub.TriggerJob(
                pb.TriggerJobRequest(tenant_id=tenant_id, parameters=parameters or {}), timeout=300
            )
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    d = response.dataset
    out.write(
        f"dataset {d.version}: {d.train_examples} train / {d.eval_examples} eval examples "
        f"({', '.join(f'{k} {v}' for k, v in sorted(d.sources.items()))})\n"
    )
    out.write(f"scheduled {format_job(response.job)}\n")
    return response


async def jobs(
    *, target: str, tenant_id: str, limit: int = 20, job_id: str = "", out: TextIO = sys.stdout
) -> list[pb.Job]:
    """Print the tenant's jobs, newest first (or the one job `job_id`)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        try:
            if job_id:
                found = [(await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)).job]
            else:
                listed = await stub.ListJobs(pb.ListJobsRequest(tenant_id=tenant_id, limit=limit), timeout=30)
                found = list(listed.jobs)
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    if not found:
        out.write(f"no fine-tune jobs for tenant {tenant_id}\n")
    for job in found:
        out.write(format_job(job) + "\n")
    return found


async def datasets(
    *, target: str, tenant_id: str, limit: int = 20, out: TextIO = sys.stdout
) -> list[pb.DatasetVersion]:
    """Print the tenant's dataset versions, newest first."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = _stub(channel)
        try:
            listed = await stub.ListDatasets(
                pb.ListDatasetsRequest(tenant_id=tenant_id, limit=limit), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(describe(exc)) from exc
    for d in listed.datasets:
        out.write(
            f"{d.version}  {d.train_examples} train / {d.eval_examples} eval  "
            f"parent {d.parent_version or '-'}  "
            f"{d.created_at.ToDatetime():%Y-%m-%d %H:%M:%S}  {d.uri}\n"
        )
    return list(listed.datasets)
