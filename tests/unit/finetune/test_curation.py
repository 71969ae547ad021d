"""Curation: joining answers and feedback per tenant, the selection rules, dedup, split and versions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.finetune.curation import (
    Answered,
    CurationPolicy,
    Feedback,
    assign_splits,
    curate,
    deduplicate,
    example_id,
    read_manifest,
    read_split,
    select_examples,
    split_of,
    write_dataset,
)

POLICY = CurationPolicy(groundedness_threshold=0.8)


def answered(
    cid: str, *, tenant: str = "t1", grounded: float | None = 0.0, q: str = "", a: str = ""
) -> Answered:
    return Answered(
        tenant_id=tenant,
        correlation_id=cid,
        question=q or f"question {cid}?",
        answer=a or f"answer {cid}.",
        context=(f"context of {cid}",),
        groundedness=grounded,
        occurred_ms=int(cid.strip("c") or 0) if cid.strip("c").isdigit() else 0,
    )


def feedback(
    cid: str,
    *,
    tenant: str = "t1",
    verdict: int = 0,
    rating: int = 0,
    correction: str = "",
    at: int = 1,
    eid: str = "",
) -> Feedback:
    return Feedback(tenant, cid, eid or f"e-{cid}-{at}", verdict, rating, correction, at)


def by_cid(examples: Sequence[object]) -> dict[str, object]:
    return {getattr(e, "correlation_id"): e for e in examples}  # noqa: B009


def test_selection_rules() -> None:
    answers = [answered(f"c{i}") for i in range(1, 9)] + [
        answered("c9", grounded=0.9),
        answered("c10", grounded=0.5),
    ]
    items = [
        feedback("c1", verdict=1),  # thumbs up
        feedback("c2", rating=4),  # rating >= 4
        feedback("c3", rating=5, correction="better answer."),  # correction replaces
        feedback("c4", verdict=2, correction="the right answer."),  # correction even with thumbs down
        feedback("c5", verdict=2),  # thumbs down: rejected
        feedback("c6", rating=2),  # low rating: rejected
        feedback("c7", rating=3),  # neutral rating, no thumbs: rejected (below min_accept_rating)
        # c8: no feedback, not grounded -> out; c9 grounded -> in; c10 below threshold -> out
    ]
    examples, stats = select_examples(answers, items, POLICY)
    got = {cid: (e.source, e.answer) for cid, e in by_cid(examples).items()}  # type: ignore[attr-defined]
    assert got == {
        "c1": ("accepted", "answer c1."),
        "c2": ("accepted", "answer c2."),
        "c3": ("correction", "better answer."),
        "c4": ("correction", "the right answer."),
        "c9": ("grounded", "answer c9."),
    }
    assert stats.rejected_by_feedback == 3
    assert stats.below_groundedness == 2


def test_thumbs_down_rejects_even_a_well_grounded_answer() -> None:
    examples, _ = select_examples([answered("c1", grounded=1.0)], [feedback("c1", verdict=2)], POLICY)
    assert examples == []


def test_latest_feedback_wins() -> None:
    items = [
        feedback("c1", verdict=2, at=1),
        feedback("c1", verdict=1, at=5),
        feedback("c2", verdict=1, at=1),
    ]
    items.append(feedback("c2", verdict=2, at=9))
    examples, _ = select_examples([answered("c1"), answered("c2")], items, POLICY)
    assert [e.correlation_id for e in examples] == ["c1"]


def test_feedback_never_attaches_to_another_tenants_request() -> None:
    """Tenant B's feedback (even a correction) on a correlation id that is tenant A's request."""
    answers = [answered("c1", tenant="tenant-a"), answered("c2", tenant="tenant-b")]
    items = [
        feedback("c1", tenant="tenant-b", correction="injected by b"),
        feedback("c2", tenant="tenant-b", verdict=1),
    ]
    examples, stats = select_examples(answers, items, POLICY)
    assert [(e.tenant_id, e.correlation_id, e.answer) for e in examples] == [("tenant-b", "c2", "answer c2.")]
    assert stats.feedback_without_answer == 1
    dataset, _ = curate("tenant-a", answers, items, POLICY, None)
    assert dataset.size == 0


def test_example_ids_differ_by_tenant() -> None:
    assert example_id("a", "c1") != example_id("b", "c1")


def test_split_is_deterministic_and_near_the_fraction() -> None:
    ids = [example_id("t", f"c{i}") for i in range(2000)]
    first = [split_of(i, 0.2) for i in ids]
    assert first == [split_of(i, 0.2) for i in ids]
    share = first.count("eval") / len(first)
    assert 0.17 < share < 0.23


def test_an_example_keeps_its_split_when_the_dataset_grows() -> None:
    small = [answered(f"c{i}", grounded=0.9) for i in range(20)]
    big = small + [answered(f"c{i}", grounded=0.9) for i in range(20, 60)]
    d1, _ = curate("t1", small, [], POLICY, None)
    d2, _ = curate("t1", big, [], POLICY, None)
    eval1 = {e.example_id for e in d1.eval}
    assert eval1 <= {e.example_id for e in d2.eval}
    assert {e.example_id for e in d1.train} <= {e.example_id for e in d2.train}


def test_small_datasets_get_a_held_out_example() -> None:
    d, _ = curate("t1", [answered("c1", grounded=0.9), answered("c2", grounded=0.9)], [], POLICY, None)
    assert len(d.train) == 1 and len(d.eval) == 1
    train, evals = assign_splits([], 0.2)
    assert train == [] and evals == []


class FakeEmbedder:
    """Bag-of-words vectors: texts sharing all words are identical (cosine 1)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        rows = []
        for text in texts:
            words = sorted(set(text.lower().replace("?", " ").replace(".", " ").split()))
            for w in words:
                self.vocab.setdefault(w, len(self.vocab))
            rows.append(words)
        out = np.zeros((len(texts), max(len(self.vocab), 1)), dtype=np.float32)
        for i, words in enumerate(rows):
            for w in words:
                out[i, self.vocab[w]] = 1.0
        normalized: npt.NDArray[np.float32] = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normalized


def test_near_duplicates_are_removed_keeping_the_strongest_source() -> None:
    answers = [
        answered("c1", grounded=0.9, q="How long is feedback kept?", a="Ninety days."),
        answered("c2", q="how long is feedback kept", a="ninety days"),  # same words: a duplicate
        answered("c3", grounded=0.9, q="What is a partition?", a="A shard of a topic."),
    ]
    items = [feedback("c2", correction="Ninety days")]
    selected, _ = select_examples(answers, items, POLICY)
    kept, dropped = deduplicate(selected, FakeEmbedder(), 0.95)
    assert sorted(e.correlation_id for e in kept) == ["c2", "c3"]  # the correction wins over grounded
    assert dropped == [(example_id("t1", "c1"), example_id("t1", "c2"))]


def test_pii_is_scrubbed_from_every_field() -> None:
    a = answered("c1", grounded=0.9, q="Is jane@corp.com my login?", a="Call +49 30 1234567 for it.")
    a = Answered(**{**a.__dict__, "context": ("card 4111 1111 1111 1111 on file",)})
    dataset, stats = curate("t1", [a], [], POLICY, None)
    (example,) = dataset.train + dataset.eval
    assert example.question == "Is [EMAIL] my login?"
    assert example.answer == "Call [PHONE] for it."
    assert example.context == ("card [CARD] on file",)
    assert stats.pii_replacements == {"email": 1, "phone": 1, "card": 1}


def test_version_is_a_content_hash_and_files_are_written_atomically(tmp_path: Path) -> None:
    answers = [answered(f"c{i}", grounded=0.9) for i in range(10)]
    d1, _ = curate("t1", answers, [], POLICY, FakeEmbedder())
    d2, _ = curate("t1", list(reversed(answers)), [], POLICY, FakeEmbedder(), parent_version="x")
    assert d1.version == d2.version
    d3, _ = curate("t1", [*answers, answered("c99", grounded=0.9)], [], POLICY, FakeEmbedder())
    assert d3.version != d1.version

    folder = write_dataset(d1, tmp_path)
    assert folder == tmp_path / "t1" / d1.version
    assert sorted(p.name for p in folder.iterdir()) == ["eval.jsonl", "manifest.json", "train.jsonl"]
    assert [p.name for p in (tmp_path / "t1").iterdir()] == [d1.version]  # no temporary folder left
    manifest = read_manifest(folder)
    assert manifest["version"] == d1.version
    assert sorted(manifest["lineage"]["train"] + manifest["lineage"]["eval"]) == sorted(
        a.correlation_id for a in answers
    )
    train = read_split(folder / "train.jsonl", "t1")
    assert [e.example_id for e in train] == [e.example_id for e in d1.train]
    assert json.loads((folder / "train.jsonl").read_text().splitlines()[0])["source"] == "grounded"
    assert write_dataset(d1, tmp_path) == folder  # idempotent
