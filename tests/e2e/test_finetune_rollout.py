"""The full fine-tune loop on the real Kafka, Weaviate, Triton and chdb, every service a process:
documents ingested; the tenant served by tiny_lora_e2e v1 (the base model, written and loaded by the
finetune at start); questions asked through the gateway; corrections as feedback; a job triggered over
gRPC; the adapter trained, evaluated and promoted: version 2 written into Triton's writable repository,
loaded through the model-control API and announced with ModelVersionPromoted(traffic_share=0.5); the
generator then serves version 2 to about half of the requests; thumbs-down feedback on version 2's
answers makes the canary worse, the finetune's canary watch publishes ModelVersionRolledBack, and the
answers come from version 1 again (version 2 is unloaded). Version 2, trained on this tenant's data,
never answers a neighbouring tenant (tenant-scoped rollout)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import tritonclient.grpc as triton_grpc
from llmops.api.v1 import feedback_service_pb2 as feedback_pb
from llmops.api.v1 import feedback_service_pb2_grpc as feedback_grpc
from llmops.api.v1 import ingest_service_pb2 as ingest_pb
from llmops.api.v1 import ingest_service_pb2_grpc as ingest_grpc
from llmops.api.v1 import query_service_pb2 as query_pb
from llmops.api.v1 import query_service_pb2_grpc as query_grpc
from llmops.feedback.v1.events_pb2 import Verdict
from llmops.finetune.v1 import finetune_service_pb2 as ft_pb
from llmops.finetune.v1 import finetune_service_pb2_grpc as ft_grpc
from llmops.finetune.v1.events_pb2 import ModelVersionPromoted, ModelVersionRolledBack
from llmops.ingest.v1.document_pb2 import Document
from llmops.ingest.v1.events_pb2 import DocumentDeleteRequested, DocumentIngestRequested

from services.finetune.knowledge import knowledge_document_id
from services.finetune.model import ensure_base_model
from services.finetune.settings import FinetuneSettings
from services.gateway.auth import issue_key
from shared.events import new_meta
from shared.infra.stack import Stack
from shared.topics import DELETE_REQUESTED, INGEST_REQUESTED, MODEL_PROMOTED, MODEL_ROLLED_BACK
from tests.support.kafka_tools import produce_events, topic_events
from tests.support.processes import ServiceProcess, platform_services

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

TENANT = "rollout"
NEIGHBOUR = "rollout-neighbour"  # another tenant: a version fine-tuned on TENANT's data never serves it
MODEL = "tiny_lora_e2e"
DOCS = {
    "kafka.md": "Kafka stores every topic as partitions of an ordered log.",
    "bread.md": "Sourdough bread rises slowly because wild yeast ferments the dough overnight.",
    "raft.md": "Raft elects one leader per term that replicates the log to a majority of followers.",
}
QUESTIONS = [
    ("How does Kafka store a topic?", "kafka.md"),
    ("What does Kafka keep a topic in?", "kafka.md"),
    ("Where are Kafka topic records stored?", "kafka.md"),
    ("How is a Kafka topic laid out?", "kafka.md"),
    ("Why does sourdough bread rise slowly?", "bread.md"),
    ("What makes sourdough rise?", "bread.md"),
    ("When does sourdough dough ferment?", "bread.md"),
    ("What ferments sourdough bread?", "bread.md"),
    ("How many leaders does Raft elect per term?", "raft.md"),
    ("Where does the Raft leader replicate its log?", "raft.md"),
    ("What does a Raft leader replicate?", "raft.md"),
    ("Who replicates the log in Raft?", "raft.md"),
]


@dataclass
class Loop:
    procs: dict[str, ServiceProcess]
    key: str
    neighbour_key: str
    kafka: str
    triton: str
    stack: Stack

    def md(self, key: str = "") -> tuple[tuple[str, str], ...]:
        return (("x-api-key", key or self.key),)

    def logs(self, *names: str) -> str:
        tails = [f"--- {n}\n{self.procs[n].log_tail(25)}" for n in names or self.procs]
        return "\n".join([*tails, f"--- triton\n{self.stack.triton.process().log_tail(30)}"])


@pytest.fixture(scope="module")
def loop(
    kafka: str, weaviate: str, triton: str, test_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loop]:
    ensure_base_model(FinetuneSettings().models_dir)  # the shared cache: built once
    workdir = tmp_path_factory.mktemp("rollout")
    keys_file = workdir / "api-keys.json"
    key = issue_key(keys_file, TENANT)
    neighbour_key = issue_key(keys_file, NEIGHBOUR)
    names = ("monitor", "embedder", "retriever", "generator", "gateway", "finetune")
    env = {
        "LLMOPS_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "LLMOPS_WEAVIATE_URL": weaviate,
        "LLMOPS_WEAVIATE_GRPC_PORT": str(test_stack.weaviate.grpc_port),
        "LLMOPS_WEAVIATE_COLLECTION": "ChunkRollout",
        "LLMOPS_TRITON_GRPC_URL": triton,
        "LLMOPS_TENANTS_KNOWN": f"{TENANT},{NEIGHBOUR}",
        "LLMOPS_GATEWAY_API_KEYS_FILE": str(keys_file),
        "LLMOPS_MONITOR_CLICKHOUSE_PATH": str(workdir / "chdb"),
        "LLMOPS_GENERATOR_ROUTING_POLICY": json.dumps({"default": {"model": MODEL, "version": "1"}}),
        **{f"LLMOPS_{name.upper()}_CONSUMER_GROUP": f"rollout-{name}" for name in names},
    }
    with platform_services(["monitor"], env, workdir) as monitor:
        finetune_env = {
            **env,
            "LLMOPS_FINETUNE_DATA_DIR": str(workdir / "finetune"),
            "LLMOPS_FINETUNE_MODEL_REPOSITORY": str(test_stack.triton.versions_repository),
            "LLMOPS_FINETUNE_SERVING_MODEL": MODEL,
            "LLMOPS_FINETUNE_MONITOR_GRPC_URL": monitor["monitor"].grpc_target,
            "LLMOPS_FINETUNE_DEDUP_BACKEND": "none",
            "LLMOPS_FINETUNE_MIN_NEW_EXAMPLES": "0",  # the job is triggered by hand
            "LLMOPS_FINETUNE_EVAL_FRACTION": "0.4",
            "LLMOPS_FINETUNE_GATE_MARGIN": "0.0",
            "LLMOPS_FINETUNE_GATE_REGRESSION_TOLERANCE": "100",
            "LLMOPS_FINETUNE_GATE_MAX_LATENCY_RATIO": "100",
            "LLMOPS_FINETUNE_CANARY_STAGES": "[0.5]",
            "LLMOPS_FINETUNE_CANARY_CHECK_INTERVAL_S": "1",
            "LLMOPS_FINETUNE_CANARY_MIN_FEEDBACK": "3",
            # Only feedback decides here: both versions of a model this small answer poorly.
            "LLMOPS_FINETUNE_CANARY_MIN_REQUESTS": "1000",
            "LLMOPS_FINETUNE_CANARY_STAGE_REQUESTS": "1000",
            "LLMOPS_FINETUNE_RETIRE_GRACE_S": "3",
        }
        with platform_services(
            ["embedder", "retriever", "generator", "gateway", "finetune"], finetune_env, workdir
        ) as procs:
            yield Loop({**monitor, **procs}, key, neighbour_key, kafka, triton, test_stack)


async def ingest(loop: Loop) -> None:
    async with grpc.aio.insecure_channel(loop.procs["gateway"].grpc_target) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        for doc_id, text in DOCS.items():
            document = Document(document_id=doc_id, source_uri=f"file:///{doc_id}", content=text.encode())
            await stub.Ingest(
                ingest_pb.IngestRequest(document=document, wait_indexed=True), metadata=loop.md(), timeout=120
            )


async def ask(loop: Loop, questions: list[str], *, key: str = "") -> list[query_pb.QueryResponse]:
    async with grpc.aio.insecure_channel(loop.procs["gateway"].grpc_target) as channel:
        stub = query_grpc.QueryServiceStub(channel)
        return list(
            await asyncio.gather(
                *(
                    stub.Query(query_pb.QueryRequest(question=q), metadata=loop.md(key), timeout=60)
                    for q in questions
                )
            )
        )


async def feedback(loop: Loop, items: list[feedback_pb.SubmitFeedbackRequest]) -> None:
    async with grpc.aio.insecure_channel(loop.procs["gateway"].grpc_target) as channel:
        stub = feedback_grpc.FeedbackServiceStub(channel)
        for item in items:
            await stub.SubmitFeedback(item, metadata=loop.md(), timeout=10)


async def events_of(loop: Loop, topic: str, message: Any, timeout_s: float, until: Any) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    found: list[Any] = []
    while time.monotonic() < deadline:
        found = [e for e in await topic_events(loop.kafka, topic, message) if e.model_name == MODEL]
        if until(found):
            return found
    return found


def wait_ready(url: str, version: str, timeout_s: float, *, ready: bool = True) -> bool:
    client = triton_grpc.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready(MODEL, version) == ready:
                    return True
            except Exception:
                pass
            time.sleep(0.5)
        return False
    finally:
        client.close()


def versions(answers: list[query_pb.QueryResponse]) -> list[str]:
    assert {a.model_name for a in answers} == {MODEL}
    return [a.model_version for a in answers]


async def test_feedback_to_promotion_to_canary_to_rollback(loop: Loop) -> None:  # noqa: PLR0915 - one story
    started = time.monotonic()
    timings: dict[str, float] = {}
    assert await asyncio.to_thread(wait_ready, loop.triton, "1", 180), loop.logs("finetune")
    await ingest(loop)

    # Stable v1 answers; corrections make the curated dataset.
    answers = await ask(loop, [q for q, _ in QUESTIONS])
    assert versions(answers) == ["1"] * len(QUESTIONS), loop.logs("generator")
    await feedback(
        loop,
        [
            feedback_pb.SubmitFeedbackRequest(
                correlation_id=a.correlation_id, rating=5, correction=DOCS[doc].split(" because ")[0] + "."
            )
            for a, (_, doc) in zip(answers, QUESTIONS, strict=True)
        ],
    )
    # The finetune has stored an answer and its feedback once it published the answer's knowledge
    # document: wait for all of them, or the job may train on whatever part had arrived.
    wanted = {knowledge_document_id(a.correlation_id) for a in answers}
    assert await knowledge_ingests(loop, wanted, 90) >= wanted, loop.logs("finetune")
    timings["asked_and_corrected"] = time.monotonic() - started

    # A job by hand, trained on all the corrections, gated, promoted.
    async with grpc.aio.insecure_channel(loop.procs["finetune"].grpc_target) as channel:
        stub = ft_grpc.FineTuneServiceStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                triggered = await stub.TriggerJob(ft_pb.TriggerJobRequest(tenant_id=TENANT), timeout=60)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
        job_id = triggered.job.job_id
        promoted = await events_of(loop, MODEL_PROMOTED.name, ModelVersionPromoted, 150, bool)
        job = (await stub.GetJob(ft_pb.GetJobRequest(job_id=job_id), timeout=10)).job
    assert promoted, f"not promoted: job {job.state} {job.error} {dict(job.metrics)}\n{loop.logs('finetune')}"
    event = promoted[0]
    assert (event.model_version, event.previous_version, event.job_id) == ("2", "1", job_id)
    assert event.traffic_share == pytest.approx(0.5)
    assert event.eval_metrics["heldout_candidate_eval_loss"] < event.eval_metrics["heldout_current_eval_loss"]
    assert await asyncio.to_thread(wait_ready, loop.triton, "2", 5)
    assert await asyncio.to_thread(wait_ready, loop.triton, "1", 5)
    timings["promoted"] = time.monotonic() - started

    # The generator serves v2 to about half of the requests (decided by a hash of the correlation id).
    deadline = time.monotonic() + 30
    canary_answers: list[query_pb.QueryResponse] = []
    while time.monotonic() < deadline:
        canary_answers = await ask(loop, [q for q, _ in QUESTIONS] * 2)
        if "2" in versions(canary_answers):
            break
    served = versions(canary_answers)
    share = served.count("2") / len(served)
    assert set(served) == {"1", "2"} and 0.15 <= share <= 0.85, served
    assert event.scope_tenant_id == TENANT
    # The version fine-tuned on TENANT's corrections never answers another tenant.
    neighbour = versions(await ask(loop, [q for q, _ in QUESTIONS] * 2, key=loop.neighbour_key))
    assert set(neighbour) == {"1"}, neighbour
    timings["canary_serving"] = time.monotonic() - started

    # The canary made worse: thumbs down on v2's answers, thumbs up on v1's.
    await feedback(
        loop,
        [
            feedback_pb.SubmitFeedbackRequest(
                correlation_id=a.correlation_id,
                verdict=Verdict.VERDICT_DOWN if a.model_version == "2" else Verdict.VERDICT_UP,
                rating=1 if a.model_version == "2" else 5,
            )
            for a in canary_answers
        ],
    )
    rolled_back = await events_of(loop, MODEL_ROLLED_BACK.name, ModelVersionRolledBack, 60, bool)
    assert rolled_back, loop.logs("finetune", "monitor")
    assert (rolled_back[0].model_version, rolled_back[0].restored_version) == ("2", "1")
    assert "thumbs-down" in rolled_back[0].reason
    timings["rolled_back"] = time.monotonic() - started

    # Every answer comes from v1 again; v2 is unloaded after the grace period.
    deadline = time.monotonic() + 30
    after: list[str] = []
    while time.monotonic() < deadline:
        after = versions(await ask(loop, [q for q, _ in QUESTIONS]))
        if set(after) == {"1"}:
            break
    assert set(after) == {"1"}, after
    assert await asyncio.to_thread(wait_ready, loop.triton, "2", 30, ready=False)
    timings["back_on_v1"] = time.monotonic() - started
    print(f"\nloop timings (s since start): { {k: round(v, 1) for k, v in timings.items()} }")
    print(f"canary share observed {share:.2f} over {len(served)} requests; rollback: {rolled_back[0].reason}")


async def asked_context_sources(loop: Loop, question: str) -> set[str]:
    [answer] = await ask(loop, [question])
    return {chunk.source_uri for chunk in answer.context}


async def wait_context(loop: Loop, question: str, until: Any, timeout_s: float) -> set[str]:
    """The sources of `question`'s retrieved context, asked again until `until(sources)`."""
    deadline = time.monotonic() + timeout_s
    sources = await asked_context_sources(loop, question)
    while not until(sources) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        sources = await asked_context_sources(loop, question)
    return sources


async def test_approved_answers_ground_later_queries_until_retracted(loop: Loop) -> None:
    """An answer feedback approved (here: corrected) becomes a document of the tenant: later questions
    retrieve it as context (source `feedback:<correlation id>`); thumbs down afterwards retracts it."""
    question = "What is the capital of the fictional country Zembla?"
    [answer] = await ask(loop, [question])
    source = f"feedback:{answer.correlation_id}"
    assert source not in {c.source_uri for c in answer.context}
    await feedback(
        loop,
        [
            feedback_pb.SubmitFeedbackRequest(
                correlation_id=answer.correlation_id, rating=5, correction="The capital of Zembla is Onhava."
            )
        ],
    )
    sources = await wait_context(loop, question, lambda s: source in s, 60)
    assert source in sources, f"{sources}\n{loop.logs('finetune', 'embedder', 'retriever')}"
    [later] = await ask(loop, ["Which city is Zembla's capital?"])
    knowledge = [c for c in later.context if c.source_uri == source]
    assert knowledge and "Onhava" in knowledge[0].text, later.context

    await feedback(
        loop,
        [
            feedback_pb.SubmitFeedbackRequest(
                correlation_id=answer.correlation_id, verdict=Verdict.VERDICT_DOWN
            )
        ],
    )
    sources = await wait_context(loop, question, lambda s: source not in s, 60)
    assert source not in sources, f"{sources}\n{loop.logs('finetune', 'retriever')}"

    # The race: the approval's ingest reaches the retriever only after the retraction's delete (the
    # ingest goes through the embedder). The retriever refuses an ingest requested before a delete of
    # its document; this replays the same document as a new ingest request, made after the delete, so
    # that it is stored: the finetune sees the document indexed while its interaction stands
    # retracted and deletes it again.
    document_id = knowledge_document_id(answer.correlation_id)
    [ingest] = [
        event
        for event in await topic_events(loop.kafka, INGEST_REQUESTED.name, DocumentIngestRequested)
        if event.document.document_id == document_id
    ]
    deletes_before = len(await deletes_of(loop, document_id))
    late = DocumentIngestRequested(
        meta=new_meta(tenant_id=ingest.meta.tenant_id, producer="test-late-ingest"), document=ingest.document
    )
    await produce_events(loop.kafka, INGEST_REQUESTED.name, [late])
    deadline = time.monotonic() + 60
    while len(deletes := await deletes_of(loop, document_id)) <= deletes_before:
        assert time.monotonic() < deadline, f"no second delete\n{loop.logs('finetune', 'retriever')}"
    assert all(d.meta.producer == "finetune" for d in deletes)
    sources = await wait_context(loop, question, lambda s: source not in s, 60)
    assert source not in sources, f"{sources}\n{loop.logs('finetune', 'retriever')}"


async def knowledge_ingests(loop: Loop, wanted: set[str], timeout_s: float) -> set[str]:
    """Ids of the documents the finetune asked to ingest, read until they include `wanted`."""
    deadline = time.monotonic() + timeout_s
    while True:
        ingests = await topic_events(loop.kafka, INGEST_REQUESTED.name, DocumentIngestRequested)
        found = {e.document.document_id for e in ingests}
        if found >= wanted or time.monotonic() > deadline:
            return found


async def deletes_of(loop: Loop, document_id: str) -> list[DocumentDeleteRequested]:
    deletes = await topic_events(loop.kafka, DELETE_REQUESTED.name, DocumentDeleteRequested)
    return [e for e in deletes if e.document_id == document_id]
