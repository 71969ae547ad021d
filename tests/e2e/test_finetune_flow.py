"""The fine-tune loop on the real Kafka: answered queries and feedback in -> dataset version -> job
triggered by new examples -> FineTuneJobUpdated scheduled / running / succeeded with metrics; the
finetune runs as its own process (real LoRA training subprocess, real all-MiniLM dedup)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from llmops.feedback.v1.events_pb2 import FeedbackRecorded, Verdict
from llmops.finetune.v1 import finetune_service_pb2 as pb
from llmops.finetune.v1 import finetune_service_pb2_grpc as pb_grpc
from llmops.finetune.v1.events_pb2 import FineTuneJobUpdated, JobState, JobTrigger
from llmops.query.v1.events_pb2 import QueryAnswered
from llmops.query.v1.query_pb2 import RetrievedChunk

from services.finetune.curation import read_manifest
from services.finetune.model import ensure_base_model
from services.finetune.settings import FinetuneSettings
from shared.events import new_meta
from shared.topics import FEEDBACK_RECORDED, FINETUNE_JOBS, QUERY_ANSWERED
from tests.support.kafka_tools import produce_events, read_all
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

TENANT = f"ft-{uuid.uuid4().hex[:8]}"
QA = [
    ("How long is feedback kept?", "Feedback is kept for ninety days.", "Feedback is kept for ninety days."),
    (
        "How long are query events kept?",
        "Query events are kept for one day.",
        "Query events are kept one day.",
    ),
    (
        "What reads a partition?",
        "Exactly one consumer of a group.",
        "A partition is read by one consumer of a group.",
    ),
    (
        "Where do model versions live?",
        "In numbered folders of the repository.",
        "Versions live in numbered folders.",
    ),
    ("What does alpha 0 mean?", "Pure keyword search.", "An alpha of 0 is pure keyword search."),
    (
        "Where are request rows written?",
        "Into ClickHouse.",
        "The monitor writes one wide row into ClickHouse.",
    ),
]


@pytest.fixture(scope="module")
def finetune(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Path]]:
    ensure_base_model(FinetuneSettings().models_dir)  # built once into the shared cache
    data = tmp_path_factory.mktemp("finetune-data")
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_TENANTS_KNOWN": TENANT,
        "LLMOPS_FINETUNE_CONSUMER_GROUP": f"llmops.finetune.test-{TENANT}",
        "LLMOPS_FINETUNE_DATA_DIR": str(data),
        "LLMOPS_FINETUNE_TICK_INTERVAL_S": "0.5",
        "LLMOPS_FINETUNE_MIN_NEW_EXAMPLES": "5",
        "LLMOPS_FINETUNE_TRAIN_EPOCHS": "4",
        "LLMOPS_FINETUNE_PROMOTION_ENABLED": "false",  # no Triton here: promotion has its own tests
    }
    with platform_services(["finetune"], env, tmp_path_factory.mktemp("services")) as procs:
        yield procs["finetune"], data


def answered(i: int, question: str, answer: str, context: str) -> QueryAnswered:
    return QueryAnswered(
        meta=new_meta(tenant_id=TENANT, producer="test", correlation_id=f"{TENANT}-q{i}"),
        question=f"{question} (asked by user{i}@example.com)",
        answer=answer,
        context=[RetrievedChunk(chunk_id=f"ch{i}", text=context)],
        model_name="tiny_llm",
        model_version="1",
    )


def feedback(i: int, *, tenant: str = TENANT, **fields: object) -> FeedbackRecorded:
    return FeedbackRecorded(
        meta=new_meta(tenant_id=tenant, producer="test", correlation_id=f"{TENANT}-q{i}"),
        **fields,  # type: ignore[arg-type]
    )


async def test_feedback_to_dataset_to_job_events(kafka: str, finetune: tuple[ServiceProcess, Path]) -> None:
    proc, data = finetune
    started = time.monotonic()
    # 12 answers: 6 facts asked twice (near-duplicates), groundedness high (the answer is in the context).
    answers = [answered(i, *QA[i % len(QA)]) for i in range(12)]
    await produce_events(kafka, QUERY_ANSWERED.name, answers)
    await produce_events(
        kafka,
        FEEDBACK_RECORDED.name,
        [
            feedback(0, verdict=Verdict.VERDICT_UP, rating=5),
            feedback(1, correction="Query events are kept for one day, then deleted."),
            feedback(2, verdict=Verdict.VERDICT_DOWN),  # rejected although grounded
            feedback(3, tenant="other-tenant", correction="must never be used"),  # another tenant: ignored
        ],
    )

    def ours(records: list[object]) -> list[FineTuneJobUpdated]:
        events = []
        for record in records:
            event = FineTuneJobUpdated()
            event.ParseFromString(record.value)  # type: ignore[attr-defined]
            if event.meta.tenant_id == TENANT:
                events.append(event)
        return events

    events: list[FineTuneJobUpdated] = []
    deadline = time.monotonic() + 110
    while time.monotonic() < deadline:
        events = ours(await read_all(kafka, FINETUNE_JOBS.name, expected=10_000, timeout_s=2))
        if any(e.state in (JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED) for e in events):
            break
    assert events, f"no job event for {TENANT}:\n{proc.log_tail()}"
    states = [e.state for e in events]
    assert states == [
        JobState.JOB_STATE_SCHEDULED,
        JobState.JOB_STATE_RUNNING,
        JobState.JOB_STATE_SUCCEEDED,
    ], f"{events[-1].error}\n{proc.log_tail()}"
    done = events[-1]
    assert len({e.job_id for e in events}) == 1
    assert done.trigger == JobTrigger.JOB_TRIGGER_NEW_EXAMPLES
    assert done.metrics["train_tokens_per_s"] > 0
    assert done.metrics["heldout_candidate_eval_loss"] > 0 and done.metrics["heldout_current_eval_loss"] > 0
    assert "gate_promote" in done.metrics
    assert done.artifact_uri.startswith("file://") and done.parameters["rank"] == "8"

    # The dataset version the job trained on: lineage, PII scrubbed, feedback rules, tenant isolation.
    folder = data / "datasets" / TENANT / done.dataset_version
    manifest = read_manifest(folder)
    lineage = manifest["lineage"]["train"] + manifest["lineage"]["eval"]
    assert f"{TENANT}-q2" not in lineage  # thumbs down
    assert manifest["duplicates"], "the repeated questions were not deduplicated"
    assert manifest["sources"].get("correction") == 1
    text = (folder / "train.jsonl").read_text() + (folder / "eval.jsonl").read_text()
    assert "example.com" not in text and "[EMAIL]" in text
    assert "must never be used" not in text
    assert "then deleted" in text

    async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
        stub = pb_grpc.FineTuneServiceStub(channel)
        datasets = await stub.ListDatasets(pb.ListDatasetsRequest(tenant_id=TENANT), timeout=10)
        jobs = await stub.ListJobs(pb.ListJobsRequest(tenant_id=TENANT), timeout=10)
        job = await stub.GetJob(pb.GetJobRequest(job_id=done.job_id), timeout=10)
    assert [d.version for d in datasets.datasets] == [done.dataset_version]
    assert [j.job_id for j in jobs.jobs] == [done.job_id]
    assert job.job.state == JobState.JOB_STATE_SUCCEEDED and job.job.metrics == done.metrics
    print(f"\nfeedback -> succeeded job in {time.monotonic() - started:.1f}s")
    print(json.dumps({k: round(v, 4) for k, v in sorted(done.metrics.items())}, indent=1))
