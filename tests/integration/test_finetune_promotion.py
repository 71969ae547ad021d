"""Promotion on the real Triton: version 1 (the base) and a promoted version 2 (base + a LoRA adapter)
written into the writable model repository, loaded through the model-control API, READY side by side
and streaming through the generator's client; a half-written version directory is never loaded; a
rolled-back version is unloaded while the stable one keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tritonclient.grpc as triton_grpc
from google.protobuf.message import Message
from llmops.finetune.v1.events_pb2 import ModelVersionPromoted, ModelVersionRolledBack

from services.finetune.canary import CanaryPolicy, VersionStats
from services.finetune.model import (
    TinyLM,
    ensure_base_model,
    load_model,
    model_batch,
    render_prompt,
    training_ids,
)
from services.finetune.promotion import ModelRepository, Promoter, TritonModelControl
from services.finetune.runner import RunResult
from services.finetune.settings import FinetuneSettings
from services.finetune.store import ROLLED_BACK, FinetuneStore, JobRecord
from services.finetune.train import LORA_TARGETS
from services.generator.llm import TritonLLM
from services.generator.routing import ModelTarget
from shared.infra.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tiny_lora_it"
ANSWER = "As partitions of a log."
QUESTION, CONTEXT = "How does Kafka store a topic?", "Kafka stores every topic as partitions."
model_prompt = render_prompt(QUESTION, [CONTEXT])  # the prompt the model rewrites PROMPT into
PROMPT = (
    "Passages:\n[1] Kafka stores every topic as partitions.\n[2] Unrelated.\n\n"
    "Question: How does Kafka store a topic?\nAnswer:"
)


def make_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter trained for a few steps towards ANSWER (the tiny model does not learn it, but its
    greedy output changes)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    model = get_peft_model(
        load_model(base),
        LoraConfig(
            r=8, lora_alpha=16, target_modules=LORA_TARGETS, fan_in_fan_out=True, task_type="CAUSAL_LM"
        ),
    )
    model.train()
    batch = model_batch([training_ids(QUESTION, [CONTEXT], ANSWER, 256)])
    optimizer = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=5e-3)
    for _ in range(100):
        loss = model(input_ids=batch[0], attention_mask=batch[1], labels=batch[2]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(out), safe_serialization=True)
    return out


class Monitor:
    def __init__(self) -> None:
        self.by_version: dict[str, VersionStats] = {}

    async def stats(
        self, tenant_id: str, since_ms: int, model: str, versions: list[str]
    ) -> dict[str, VersionStats]:
        return {v: self.by_version.get(v, VersionStats()) for v in versions}


async def stream(url: str, version: str) -> str:
    llm = TritonLLM(url)
    try:
        return "".join([p async for p in llm.stream(ModelTarget(MODEL, version), PROMPT, max_tokens=24)])
    finally:
        await llm.close()


@pytest.fixture(scope="module")
def base_dir() -> Path:
    return ensure_base_model(FinetuneSettings().models_dir)


@pytest.fixture
async def promoter(
    triton: str, test_stack: Stack, base_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[Promoter, list[Message], Monitor]]:
    events: list[Message] = []

    async def publish(topic: str, event: Message, key: str) -> None:
        events.append(event)

    monitor = Monitor()
    promoter = Promoter(
        FinetuneStore(tmp_path / "store.sqlite3"),
        ModelRepository(test_stack.triton.versions_repository, MODEL),
        TritonModelControl(triton),
        monitor,
        publish,
        models_dir=base_dir.parent,
        canary_stages=(0.5,),
        policy=CanaryPolicy(min_requests=5, min_feedback=3, stage_requests=1000),
        producer="test",
        promoted_topic="promoted",
        rolled_back_topic="rolled-back",
        retire_grace_s=0.5,
    )
    yield promoter, events, monitor
    await promoter.close()


async def test_promoted_version_loads_beside_stable_streams_and_rolls_back(
    promoter: tuple[Promoter, list[Message], Monitor],
    triton: str,
    test_stack: Stack,
    base_dir: Path,
    tmp_path: Path,
) -> None:
    promoter_, events, monitor = promoter
    client = triton_grpc.InferenceServerClient(triton)
    started = time.monotonic()
    try:
        await promoter_.bootstrap()
    except Exception:
        pytest.fail(f"bootstrap failed\n{test_stack.triton.process().log_tail()}", pytrace=False)
    loaded_s = time.monotonic() - started
    assert client.is_model_ready(MODEL, "1"), test_stack.triton.process().log_tail()
    base_answer = await stream(triton, "1")

    adapter = make_adapter(base_dir, tmp_path / "ft-it")
    job = JobRecord("ft-it", "t1", 3, 4, "", base_dir.name, "d1")
    started = time.monotonic()
    await promoter_.on_succeeded(job, RunResult(True, artifact_dir=str(adapter), gate={"promote": True}))
    promote_s = time.monotonic() - started
    assert events, f"nothing promoted\n{test_stack.triton.process().log_tail()}"
    promoted = events[-1]
    assert isinstance(promoted, ModelVersionPromoted)
    assert (promoted.model_version, promoted.previous_version, promoted.traffic_share) == ("2", "1", 0.5)
    assert client.is_model_ready(MODEL, "1") and client.is_model_ready(MODEL, "2")
    canary_answer = await stream(triton, "2")
    # What Triton serves as version 2 is the base with this adapter merged, generated greedily.
    expected = TinyLM("v2", load_model(base_dir, adapter)).generate(model_prompt, 24).text
    assert canary_answer.strip() == expected and canary_answer != base_answer
    assert await stream(triton, "1") == base_answer  # greedy: deterministic
    print(
        f"\nbootstrap+load {loaded_s:.1f}s, promotion {promote_s:.1f}s; "
        f"v1 {base_answer!r} v2 {canary_answer!r}"
    )

    # A regression: rollback announced, then version 2 unloaded after the grace period; 1 keeps serving.
    monitor.by_version = {"2": VersionStats(requests=5, feedback=3, down=3), "1": VersionStats(requests=5)}
    [verdict] = await promoter_.watch_once()
    assert verdict.action == "rollback"
    rolled_back = events[-1]
    assert isinstance(rolled_back, ModelVersionRolledBack) and rolled_back.restored_version == "1"
    record = promoter_.store.version(MODEL, 2)
    assert record is not None and record.state == ROLLED_BACK
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and client.is_model_ready(MODEL, "2"):  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    assert not client.is_model_ready(MODEL, "2") and client.is_model_ready(MODEL, "1")
    assert await stream(triton, "1") == base_answer
    client.close()


async def test_half_written_version_is_never_loaded(
    promoter: tuple[Promoter, list[Message], Monitor], triton: str, test_stack: Stack, base_dir: Path
) -> None:
    promoter_, _, _ = promoter
    await promoter_.bootstrap()
    repo = promoter_.repository
    client = triton_grpc.InferenceServerClient(triton)
    serving = repo.versions()
    partial = repo.next_version()  # the number the crashed writes would have taken

    def crash(staging: Path) -> None:  # the writer dies after copying part of the weights
        (staging / "base" / "model.safetensors").write_bytes(b"\0" * 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        repo.write_version(base_dir, None, {"job_id": "crashed"}, before_rename=crash)
    # As a killed writer leaves it: a staging folder with a truncated weights file.
    killed = repo.model_dir / f".tmp-{partial}-killed"
    (killed / "base").mkdir(parents=True)
    (killed / "model.py").write_text("raise SystemExit('never loaded')\n")
    (killed / "base" / "model.safetensors").write_bytes(b"\0" * 100)

    await promoter_.control.load(MODEL)  # a reload now must not see the partial version
    index = {
        (m.name, m.version): m.state for m in client.get_model_repository_index().models if m.name == MODEL
    }
    assert repo.versions() == serving
    ready = {key for key, state in index.items() if state == "READY"}
    assert ready == {(MODEL, str(v)) for v in serving}, index
    assert (MODEL, str(partial)) not in index, index
    assert all(client.is_model_ready(MODEL, str(v)) for v in serving)
    assert not client.is_model_ready(MODEL, str(partial))
    assert await stream(triton, str(serving[0]))
    # The next start removes the leftovers.
    assert killed in repo.prepare() and not list(repo.model_dir.glob(".tmp-*"))
    client.close()
