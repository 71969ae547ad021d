"""The finetune's gRPC API (llmops.finetune.v1.FineTuneService): trigger, jobs and dataset versions."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from llmops.finetune.v1 import finetune_service_pb2 as pb
from llmops.finetune.v1 import finetune_service_pb2_grpc as pb_grpc

from services.finetune.scheduler import NothingToTrain, Scheduler
from services.finetune.store import DatasetRecord, FinetuneStore, JobRecord
from shared.tenants import TenantRegistry, UnknownTenantError

DEFAULT_LIMIT, MAX_LIMIT = 20, 500


def _ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def job_message(job: JobRecord) -> pb.Job:
    return pb.Job(
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        state=job.state,  # type: ignore[arg-type]
        trigger=job.trigger,  # type: ignore[arg-type]
        base_model=job.base_model,
        dataset_version=job.dataset_version,
        parameters=job.parameters,
        metrics=job.metrics,
        artifact_uri=job.artifact_uri,
        error=job.error,
        created_at=_ts(job.created_ms),
        updated_at=_ts(job.updated_ms),
        trigger_detail=job.trigger_detail,
    )


def dataset_message(record: DatasetRecord) -> pb.DatasetVersion:
    return pb.DatasetVersion(
        tenant_id=record.tenant_id,
        version=record.version,
        parent_version=record.parent_version,
        train_examples=record.train_examples,
        eval_examples=record.eval_examples,
        sources=record.sources,
        uri=record.uri,
        created_at=_ts(record.created_ms),
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, detail: str) -> NoReturn:
    await context.abort(code, detail)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


class FineTuneServicer(pb_grpc.FineTuneServiceServicer):
    def __init__(self, scheduler: Scheduler, store: FinetuneStore, tenants: TenantRegistry) -> None:
        self.scheduler = scheduler
        self.store = store
        self.tenants = tenants

    async def _tenant(self, tenant_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        try:
            return self.tenants.check(tenant_id)
        except UnknownTenantError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def TriggerJob(
        self, request: pb.TriggerJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TriggerJobResponse:
        tenant_id = await self._tenant(request.tenant_id, context)
        try:
            job, dataset = await self.scheduler.trigger_manual(tenant_id, dict(request.parameters))
        except ValueError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NothingToTrain as exc:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.TriggerJobResponse(job=job_message(job), dataset=dataset_message(dataset))

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetJobResponse:
        job = self.store.job(request.job_id)
        if job is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        return pb.GetJobResponse(job=job_message(job))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        tenant_id = await self._tenant(request.tenant_id, context)
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        return pb.ListJobsResponse(jobs=[job_message(j) for j in self.store.jobs(tenant_id, limit=limit)])

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDatasetsResponse:
        tenant_id = await self._tenant(request.tenant_id, context)
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        return pb.ListDatasetsResponse(
            datasets=[dataset_message(d) for d in self.store.datasets(tenant_id, limit=limit)]
        )
