"""Promotion without servers: atomic version writes, the promoter's canary/rollback/widen steps with a
fake Triton control, a fake monitor and a recording publisher."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal, Protocol

import pytest
from google.protobuf.message import Message
from llmops.finetune.v1.events_pb2 import ModelVersionPromoted, ModelVersionRolledBack

from services.finetune import promotion
from services.finetune.canary import CanaryPolicy, VersionStats
from services.finetune.promotion import ModelRepository, Promoter
from services.finetune.runner import RunResult
from services.finetune.store import CANARY, FAILED, ROLLED_BACK, STABLE, SUPERSEDED, FinetuneStore, JobRecord

MODEL = "tiny_lora_unit"


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "tiny-gpt2-bytes-test"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"base-weights")
    (folder / "manifest.json").write_text("{}")
    return folder


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "artifacts" / "ft-1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"lora")
    (folder / "metrics.json").write_text("{}")
    return folder


def test_versions_are_written_completely_then_renamed(
    tmp_path: Path, base_dir: Path, adapter_dir: Path
) -> None:
    repo = ModelRepository(tmp_path / "repo", MODEL)
    assert repo.write_version(base_dir, None, {"job_id": ""}) == 1
    assert repo.write_version(base_dir, adapter_dir, {"job_id": "ft-1"}) == 2
    assert repo.versions() == [1, 2]
    config = (repo.model_dir / "config.pbtxt").read_text()
    assert f'name: "{MODEL}"' in config and "version_policy: { all { } }" in config
    v2 = repo.version_dir(2)
    assert sorted(p.name for p in v2.iterdir()) == ["adapter", "base", "manifest.json", "model.py"]
    assert (v2 / "adapter" / "adapter_model.safetensors").read_bytes() == b"lora"
    assert not (v2 / "adapter" / "metrics.json").exists() and not (v2 / "base" / "manifest.json").exists()
    assert repo.adapter_of(2) == v2 / "adapter" and repo.adapter_of(1) is None
    assert not list(repo.model_dir.glob(".tmp-*"))


def test_a_crash_before_the_rename_leaves_no_version(tmp_path: Path, base_dir: Path) -> None:
    repo = ModelRepository(tmp_path / "repo", MODEL)
    repo.write_version(base_dir, None, {})

    def crash(staging: Path) -> None:
        (staging / "base" / "model.safetensors").write_bytes(b"half")  # as a crash mid-copy leaves it
        raise SystemExit("crash")

    with pytest.raises(SystemExit):
        repo.write_version(base_dir, None, {}, before_rename=crash)
    assert repo.versions() == [1]
    # A process killed outright leaves its staging folder; Triton ignores it, prepare() removes it.
    leftover = repo.model_dir / ".tmp-2-killed"
    (leftover / "base").mkdir(parents=True)
    assert repo.versions() == [1]
    assert repo.prepare() == [leftover] and not leftover.exists()


def test_version_numbers_are_never_reused(tmp_path: Path, base_dir: Path) -> None:
    repo = ModelRepository(tmp_path / "repo", MODEL)
    for _ in range(3):
        repo.write_version(base_dir, None, {})
    repo.set_aside(3, "retired")
    repo.set_aside(2, "failed")
    assert repo.versions() == [1]
    assert repo.next_version() == 4
    assert sorted(p.name for p in repo.model_dir.iterdir() if p.is_dir()) == [".failed-2", ".retired-3", "1"]


def test_bad_model_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid Triton model name"):
        ModelRepository(tmp_path, "../escape")


class FakeControl:
    def __init__(self, repo: ModelRepository) -> None:
        self.repo = repo
        self.loaded: list[list[int]] = []
        self.fail_versions: set[int] = set()

    async def load(self, model: str) -> None:
        self.loaded.append(self.repo.versions())

    async def ready(self, model: str, version: int) -> bool:
        return version in self.repo.versions() and version not in self.fail_versions

    async def smoke(self, model: str, version: int) -> str:
        return "ok"

    async def close(self) -> None:
        pass


class FakeMonitor:
    def __init__(self) -> None:
        self.by_version: dict[str, VersionStats] = {}
        self.asked: list[tuple[int, list[str]]] = []  # (since_ms, versions) of each call
        self.tenants: list[tuple[str, list[str]]] = []  # (tenant, versions) of each call

    async def stats(
        self, tenant_id: str, since_ms: int, model: str, versions: list[str]
    ) -> dict[str, VersionStats]:
        self.asked.append((since_ms, versions))
        self.tenants.append((tenant_id, versions))
        return {v: self.by_version.get(v, VersionStats()) for v in versions}


class Setup:
    def __init__(
        self,
        tmp_path: Path,
        base_dir: Path,
        stages: tuple[float, ...] = (0.2,),
        scope: Literal["tenant", "all"] = "tenant",
    ) -> None:
        self.store = FinetuneStore(None)
        self.repo = ModelRepository(tmp_path / "repo", MODEL)
        self.control = FakeControl(self.repo)
        self.monitor = FakeMonitor()
        self.events: list[tuple[str, Message, str]] = []

        async def publish(topic: str, event: Message, key: str) -> None:
            self.events.append((topic, event, key))

        self.promoter = Promoter(
            self.store,
            self.repo,
            self.control,
            self.monitor,
            publish,
            models_dir=base_dir.parent,
            canary_stages=stages,
            scope=scope,
            policy=CanaryPolicy(min_requests=5, min_feedback=3, stage_requests=10),
            producer="finetune",
            promoted_topic="promoted",
            rolled_back_topic="rolled-back",
            retire_grace_s=0.0,
        )


class MakeSetup(Protocol):
    def __call__(self, stages: tuple[float, ...], scope: Literal["tenant", "all"] = ...) -> Setup: ...


@pytest.fixture
def make_setup(tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> MakeSetup:
    """A Setup with the given canary stages and rollout scope (the base model from the test's cache)."""

    async def cached(models_dir: Path, threads: int) -> Path:
        return base_dir

    monkeypatch.setattr(promotion, "_ensure_base_model_in_subprocess", cached)
    return lambda stages, scope="tenant": Setup(tmp_path, base_dir, stages, scope)


@pytest.fixture
def setup(make_setup: MakeSetup) -> Setup:
    return make_setup((0.2,))


def job(job_id: str = "ft-1", tenant_id: str = "t1") -> JobRecord:
    return JobRecord(
        job_id, tenant_id, 3, 4, "", "base", "d1", metrics={"heldout_candidate_eval_loss": 1.5, "x": 1}
    )


def passed(adapter: Path) -> RunResult:
    return RunResult(True, artifact_dir=str(adapter), gate={"promote": True, "reasons": []})


async def test_bootstrap_writes_version_1_and_loads_it(setup: Setup) -> None:
    await setup.promoter.bootstrap()
    assert setup.repo.versions() == [1] and setup.control.loaded == [[1]]
    assert setup.promoter.stable() is not None and setup.promoter.current_adapter("t1") == ""
    await setup.promoter.bootstrap()  # a restart: nothing new written
    assert setup.repo.versions() == [1]


async def test_promotion_loads_the_new_version_then_announces_the_canary(
    setup: Setup, adapter_dir: Path
) -> None:
    await setup.promoter.bootstrap()
    await setup.promoter.on_succeeded(job(), passed(adapter_dir))
    assert setup.repo.versions() == [1, 2] and setup.control.loaded[-1] == [1, 2]
    topic, event, key = setup.events[-1]
    assert topic == "promoted" and key == MODEL and isinstance(event, ModelVersionPromoted)
    assert (event.model_version, event.previous_version) == ("2", "1")
    assert event.traffic_share == pytest.approx(0.2)
    assert event.job_id == "ft-1" and dict(event.eval_metrics) == {"heldout_candidate_eval_loss": 1.5}
    assert event.scope_tenant_id == "t1"  # a version trained on t1's data serves t1 only
    canary = setup.promoter.canary("t1")
    assert canary is not None and canary.state == CANARY and canary.version == 2
    assert setup.promoter.canary("t2") is None
    # The stable version's adapter stays "current" while the canary is watched.
    assert setup.promoter.current_adapter("t1") == ""


async def test_gate_refusal_and_an_active_canary_promote_nothing(setup: Setup, adapter_dir: Path) -> None:
    await setup.promoter.bootstrap()
    await setup.promoter.on_succeeded(
        job(), RunResult(True, artifact_dir=str(adapter_dir), gate={"promote": False})
    )
    assert setup.repo.versions() == [1] and not setup.events
    await setup.promoter.on_succeeded(job(), passed(adapter_dir))
    await setup.promoter.on_succeeded(job("ft-2"), passed(adapter_dir))  # canary v2 still watched
    assert setup.repo.versions() == [1, 2] and len(setup.events) == 1


async def test_a_version_that_does_not_become_ready_is_set_aside_unannounced(
    setup: Setup, adapter_dir: Path
) -> None:
    await setup.promoter.bootstrap()
    setup.control.fail_versions.add(2)
    await setup.promoter.on_succeeded(job(), passed(adapter_dir))
    assert setup.repo.versions() == [1] and setup.control.loaded[-1] == [1]
    assert not setup.events
    failed = setup.store.version(MODEL, 2)
    assert failed is not None and failed.state == FAILED and "not READY" in failed.reason
    assert setup.repo.next_version() == 3


async def test_a_worse_canary_is_rolled_back_and_unloaded(setup: Setup, adapter_dir: Path) -> None:
    await setup.promoter.bootstrap()
    await setup.promoter.on_succeeded(job(), passed(adapter_dir))
    assert [v.action for v in await setup.promoter.watch_once()] == ["wait"]
    setup.monitor.by_version = {
        "2": VersionStats(requests=6, feedback=4, down=4),
        "1": VersionStats(requests=6, feedback=4, down=0),
    }
    [verdict] = await setup.promoter.watch_once()
    assert verdict.action == "rollback"
    topic, event, _ = setup.events[-1]
    assert topic == "rolled-back" and isinstance(event, ModelVersionRolledBack)
    assert (event.model_version, event.restored_version) == ("2", "1") and "thumbs-down" in event.reason
    record = setup.store.version(MODEL, 2)
    assert record is not None and record.state == ROLLED_BACK
    assert await setup.promoter.watch_once() == []  # no canary any more
    for _ in range(100):  # retired after the grace period (0 here)
        if setup.repo.versions() == [1]:
            break
        await asyncio.sleep(0.01)
    assert setup.repo.versions() == [1] and setup.control.loaded[-1] == [1]
    await setup.promoter.close()


async def test_a_good_canary_is_widened_and_becomes_current(setup: Setup, adapter_dir: Path) -> None:
    await setup.promoter.bootstrap()
    await setup.promoter.on_succeeded(job(), passed(adapter_dir))
    setup.monitor.by_version = {
        "2": VersionStats(requests=12, scored=12, groundedness=0.9, feedback=3, down=0),
        "1": VersionStats(requests=40, scored=40, groundedness=0.9, feedback=8, down=1),
    }
    [verdict] = await setup.promoter.watch_once()
    assert verdict.action == "widen"
    _, event, _ = setup.events[-1]
    assert isinstance(event, ModelVersionPromoted)
    assert (event.traffic_share, event.model_version, event.scope_tenant_id) == (1.0, "2", "t1")
    # Tenant scope: v2 serves t1 (whose data trained it); v1 keeps serving everyone else.
    states = {v.version: v.state for v in setup.store.versions(MODEL)}
    assert states == {1: STABLE, 2: STABLE}
    assert setup.promoter.current_adapter("t1") == str(setup.repo.version_dir(2) / "adapter")
    assert setup.promoter.current_adapter("t2") == ""


async def test_a_staged_canary_widens_stage_by_stage_on_evidence_at_each_share(
    make_setup: MakeSetup, adapter_dir: Path
) -> None:
    staged = make_setup((0.1, 0.5))
    await staged.promoter.bootstrap()
    await staged.promoter.on_succeeded(job(), passed(adapter_dir))
    staged.monitor.by_version = {
        "2": VersionStats(requests=12, scored=12, groundedness=0.9, feedback=3, down=0),
        "1": VersionStats(requests=40, scored=40, groundedness=0.9, feedback=8, down=1),
    }
    shares = [e.traffic_share for _, e, _ in staged.events if isinstance(e, ModelVersionPromoted)]
    assert shares == [pytest.approx(0.1)]
    [verdict] = await staged.promoter.watch_once()
    assert verdict.action == "widen"
    canary = staged.promoter.canary("t1")
    assert canary is not None and canary.traffic_share == pytest.approx(0.5)  # still a canary
    assert staged.promoter.current_adapter("t1") == ""
    # At the new share the evidence is counted from when it began.
    staged.monitor.asked.clear()
    assert [v.action for v in await staged.promoter.watch_once()] == ["widen"]
    assert staged.monitor.asked == [(canary.promoted_ms, ["2", "1"]), (canary.updated_ms, ["2"])]
    shares = [e.traffic_share for _, e, _ in staged.events if isinstance(e, ModelVersionPromoted)]
    assert shares == [pytest.approx(0.1), pytest.approx(0.5), 1.0]
    states = {v.version: v.state for v in staged.store.versions(MODEL)}
    assert states == {1: STABLE, 2: STABLE}


async def test_no_stages_promote_without_a_canary(make_setup: MakeSetup, adapter_dir: Path) -> None:
    full = make_setup(())
    await full.promoter.bootstrap()
    await full.promoter.on_succeeded(job(), passed(adapter_dir))
    assert full.promoter.canary("t1") is None
    stable = full.promoter.stable("t1")
    assert stable is not None and stable.version == 2
    assert full.promoter.current_adapter("t1") == str(full.repo.version_dir(2) / "adapter")


async def test_each_tenant_has_its_own_canary_and_stable_version(setup: Setup, adapter_dir: Path) -> None:
    """Tenant scope: t2's job is not refused while t1's canary is watched; each canary is compared with
    stable on its own tenant's traffic and rolls back alone."""
    await setup.promoter.bootstrap()
    await setup.promoter.on_succeeded(job("ft-1", "t1"), passed(adapter_dir))
    await setup.promoter.on_succeeded(job("ft-2", "t2"), passed(adapter_dir))
    promoted = [e for _, e, _ in setup.events if isinstance(e, ModelVersionPromoted)]
    assert [(e.model_version, e.scope_tenant_id) for e in promoted] == [("2", "t1"), ("3", "t2")]
    setup.monitor.by_version = {
        "3": VersionStats(requests=6, feedback=4, down=4),
        "1": VersionStats(requests=6),
    }
    verdicts = await setup.promoter.watch_once()
    assert sorted(v.action for v in verdicts) == ["rollback", "wait"]
    assert {t for t, _ in setup.monitor.tenants} == {"t1", "t2"}
    rolled_back = setup.events[-1][1]
    assert isinstance(rolled_back, ModelVersionRolledBack)
    assert (rolled_back.model_version, rolled_back.restored_version, rolled_back.scope_tenant_id) == (
        "3",
        "1",
        "t2",
    )
    canary_t1 = setup.promoter.canary("t1")
    assert canary_t1 is not None and canary_t1.version == 2 and setup.promoter.canary("t2") is None
    await setup.promoter.close()


async def test_all_scope_serves_a_fine_tuned_version_to_every_tenant(
    make_setup: MakeSetup, adapter_dir: Path
) -> None:
    everyone = make_setup((), "all")
    await everyone.promoter.bootstrap()
    await everyone.promoter.on_succeeded(job(), passed(adapter_dir))
    _, event, _ = everyone.events[-1]
    assert isinstance(event, ModelVersionPromoted) and event.scope_tenant_id == ""
    states = {v.version: v.state for v in everyone.store.versions(MODEL)}
    assert states == {1: SUPERSEDED, 2: STABLE}
    assert everyone.promoter.current_adapter("t2") == str(everyone.repo.version_dir(2) / "adapter")


@pytest.mark.parametrize("stages", [(0.0,), (0.5, 1.0), (0.5, 0.2), (0.3, 0.3)])
def test_promoter_refuses_bad_stages(setup: Setup, stages: tuple[float, ...]) -> None:
    kwargs: dict[str, Any] = {
        "models_dir": Path("."),
        "canary_stages": stages,
        "policy": CanaryPolicy(),
        "producer": "p",
        "promoted_topic": "a",
        "rolled_back_topic": "b",
    }
    with pytest.raises(ValueError, match="canary stages"):
        Promoter(setup.store, setup.repo, setup.control, setup.monitor, setup.promoter.publish, **kwargs)
