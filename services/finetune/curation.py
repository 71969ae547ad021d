"""Dataset curation: answered requests joined with their feedback become versioned training datasets.

Rules (`select_examples`, pure):

1. An answer and its feedback are joined on (tenant_id, correlation_id): feedback recorded under one
   tenant never attaches to another tenant's request. Feedback without its answer waits (the answer may
   still be on its way); an answer's latest feedback (by event time, then event id) is the verdict.
2. A correction replaces the answer (source ``correction``), whatever the thumbs said.
3. Without a correction, thumbs up or a rating >= `min_accept_rating` accepts the answer (``accepted``);
   thumbs down or a rating below it rejects the request, even when it is well grounded.
4. Without feedback, an answer whose groundedness (the monitor's `groundedness`, computed when the
   answer arrived) is >= `groundedness_threshold` is taken as is (``grounded``).

Then (`curate`): PII is scrubbed from question, context and answer (`services.finetune.pii`),
near-duplicates are removed (cosine similarity of the sentence embeddings of "question + answer" >=
`dedup_threshold`; of a near-duplicate group the example of the strongest source is kept, corrections
before accepted before grounded, then the earliest), and each example goes to the train or eval split
by a hash of its id (`split_of`), so an example never changes split between dataset versions.

`write_dataset` writes ``train.jsonl``, ``eval.jsonl`` and ``manifest.json`` (lineage: the correlation
ids of every example, per split; counts; the curation settings) to ``<root>/<tenant>/<version>/``,
where the version is a hash of the two JSONL files' content: the same examples give the same version.
The folder appears complete or not at all (written to a temporary folder, fsynced, renamed).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.finetune.files import staged_dir
from services.finetune.pii import ScrubReport, scrub

Source = Literal["correction", "accepted", "grounded"]
SOURCE_RANK: dict[str, int] = {"correction": 0, "accepted": 1, "grounded": 2}
VERDICT_UP = 1
VERDICT_DOWN = 2

Embed = Callable[[list[str]], npt.NDArray[np.float32]]
"""L2-normalized embeddings of texts, one row each (the embedder's `embed`)."""


@dataclass(frozen=True)
class Answered:
    """What the store keeps of a QueryAnswered (already PII-scrubbed when stored)."""

    tenant_id: str
    correlation_id: str
    question: str
    answer: str
    context: tuple[str, ...]
    groundedness: float | None
    occurred_ms: int
    model_name: str = ""
    model_version: str = ""


@dataclass(frozen=True)
class Feedback:
    tenant_id: str
    correlation_id: str
    event_id: str
    verdict: int  # 0 none, 1 up, 2 down (llmops.feedback.v1.Verdict)
    rating: int  # 0 none, else 1-5
    correction: str
    occurred_ms: int


@dataclass(frozen=True)
class Example:
    example_id: str
    tenant_id: str
    correlation_id: str
    question: str
    context: tuple[str, ...]
    answer: str
    source: Source
    groundedness: float | None
    occurred_ms: int

    def record(self) -> dict[str, Any]:
        """The JSONL form (no timestamps: the dataset version hashes this)."""
        return {
            "id": self.example_id,
            "correlation_id": self.correlation_id,
            "question": self.question,
            "context": list(self.context),
            "answer": self.answer,
            "source": self.source,
            "groundedness": self.groundedness,
        }

    @staticmethod
    def from_record(tenant_id: str, record: dict[str, Any]) -> Example:
        return Example(
            example_id=str(record["id"]),
            tenant_id=tenant_id,
            correlation_id=str(record["correlation_id"]),
            question=str(record["question"]),
            context=tuple(str(c) for c in record.get("context", ())),
            answer=str(record["answer"]),
            source=record["source"],
            groundedness=record.get("groundedness"),
            occurred_ms=0,
        )


@dataclass(frozen=True)
class CurationPolicy:
    min_accept_rating: int = 4
    groundedness_threshold: float = 0.8
    dedup_threshold: float = 0.95
    eval_fraction: float = 0.2
    max_examples: int = 5000

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction {self.eval_fraction} is not in (0, 1)")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ValueError(f"dedup_threshold {self.dedup_threshold} is not in (0, 1]")


@dataclass
class CurationStats:
    answers: int = 0
    feedback_without_answer: int = 0
    rejected_by_feedback: int = 0
    below_groundedness: int = 0
    selected: dict[str, int] = field(default_factory=dict)
    duplicates_removed: int = 0
    pii_replacements: dict[str, int] = field(default_factory=dict)


def example_id(tenant_id: str, correlation_id: str) -> str:
    return hashlib.sha256(f"{tenant_id}\x00{correlation_id}".encode()).hexdigest()[:16]


def split_of(example_id: str, eval_fraction: float) -> Literal["train", "eval"]:
    """Deterministic split: a uniform number from the id's hash, below `eval_fraction` means eval."""
    digest = hashlib.sha256(f"split:{example_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def latest_feedback(feedback: Iterable[Feedback]) -> dict[tuple[str, str], Feedback]:
    latest: dict[tuple[str, str], Feedback] = {}
    for item in feedback:
        key = (item.tenant_id, item.correlation_id)
        current = latest.get(key)
        if current is None or (item.occurred_ms, item.event_id) > (current.occurred_ms, current.event_id):
            latest[key] = item
    return latest


Judgement = Literal["correction", "accepted", "rejected", "none"]


def judge(feedback: Feedback | None, min_accept_rating: int) -> Judgement:
    """What one feedback says of its answer (rules 2 and 3): a correction wins, then thumbs down or a
    low rating rejects, thumbs up or a high rating accepts; no feedback or neither says nothing."""
    if feedback is None:
        return "none"
    if feedback.correction.strip():
        return "correction"
    if feedback.verdict == VERDICT_DOWN or 0 < feedback.rating < min_accept_rating:
        return "rejected"
    if feedback.verdict == VERDICT_UP or feedback.rating >= min_accept_rating:
        return "accepted"
    return "none"


def select_examples(
    answers: Iterable[Answered], feedback: Iterable[Feedback], policy: CurationPolicy
) -> tuple[list[Example], CurationStats]:
    """The examples the rules of the module docstring select (no scrubbing, no dedup), oldest first."""
    stats = CurationStats()
    verdicts = latest_feedback(feedback)
    by_key = {(a.tenant_id, a.correlation_id): a for a in answers}
    stats.answers = len(by_key)
    stats.feedback_without_answer = sum(1 for key in verdicts if key not in by_key)
    examples: list[Example] = []
    for key, answered in by_key.items():
        verdict = verdicts.get(key)
        source: Source
        answer = answered.answer
        judged = judge(verdict, policy.min_accept_rating)
        if judged == "correction":
            assert verdict is not None
            source, answer = "correction", verdict.correction.strip()
        elif judged == "rejected":
            stats.rejected_by_feedback += 1
            continue
        elif judged == "accepted":
            source = "accepted"
        elif answered.groundedness is not None and answered.groundedness >= policy.groundedness_threshold:
            source = "grounded"
        else:
            stats.below_groundedness += 1
            continue
        if not answer.strip() or not answered.question.strip():
            continue
        examples.append(
            Example(
                example_id=example_id(answered.tenant_id, answered.correlation_id),
                tenant_id=answered.tenant_id,
                correlation_id=answered.correlation_id,
                question=answered.question,
                context=answered.context,
                answer=answer,
                source=source,
                groundedness=answered.groundedness,
                occurred_ms=max(answered.occurred_ms, verdict.occurred_ms if verdict else 0),
            )
        )
    examples.sort(key=lambda e: (e.occurred_ms, e.example_id))
    if len(examples) > policy.max_examples:  # the newest examples win
        examples = examples[-policy.max_examples :]
    for example in examples:
        stats.selected[example.source] = stats.selected.get(example.source, 0) + 1
    return examples, stats


def scrub_example(example: Example, report: ScrubReport) -> Example:
    return replace(
        example,
        question=scrub(example.question, report),
        answer=scrub(example.answer, report),
        context=tuple(scrub(c, report) for c in example.context),
    )


def dedup_text(example: Example) -> str:
    return f"{example.question}\n{example.answer}"


def deduplicate(
    examples: Sequence[Example], embed: Embed, threshold: float
) -> tuple[list[Example], list[tuple[str, str]]]:
    """Examples without near-duplicates (cosine >= threshold), in their input order, and the
    (dropped id, kept id) pairs. Of a group the strongest source wins, then the earliest."""
    if not examples:
        return [], []
    vectors = np.asarray(embed([dedup_text(e) for e in examples]), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.clip(norms, 1e-12, None)
    order = sorted(range(len(examples)), key=lambda i: (SOURCE_RANK[examples[i].source], i))
    kept: list[int] = []
    dropped: list[tuple[str, str]] = []
    for i in order:
        if kept:
            similarities = vectors[kept] @ vectors[i]
            best = int(np.argmax(similarities))
            if float(similarities[best]) >= threshold:
                dropped.append((examples[i].example_id, examples[kept[best]].example_id))
                continue
        kept.append(i)
    return [examples[i] for i in sorted(kept)], dropped


@dataclass(frozen=True)
class Dataset:
    tenant_id: str
    version: str
    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    manifest: dict[str, Any]

    @property
    def size(self) -> int:
        return len(self.train) + len(self.eval)


def _jsonl(examples: Iterable[Example]) -> bytes:
    return b"".join(
        json.dumps(e.record(), sort_keys=True, ensure_ascii=False).encode() + b"\n" for e in examples
    )


def assign_splits(examples: Sequence[Example], eval_fraction: float) -> tuple[list[Example], list[Example]]:
    """Split by `split_of`; with two examples or more neither split is left empty (the example whose
    hash lies nearest the boundary moves), so small datasets still have a held-out set."""
    train = [e for e in examples if split_of(e.example_id, eval_fraction) == "train"]
    evals = [e for e in examples if split_of(e.example_id, eval_fraction) == "eval"]
    if len(examples) >= 2 and not evals:
        moved = min(train, key=lambda e: e.example_id)
        train.remove(moved)
        evals.append(moved)
    elif len(examples) >= 2 and not train:
        moved = min(evals, key=lambda e: e.example_id)
        evals.remove(moved)
        train.append(moved)
    return train, evals


def curate(
    tenant_id: str,
    answers: Iterable[Answered],
    feedback: Iterable[Feedback],
    policy: CurationPolicy,
    embed: Embed | None,
    *,
    parent_version: str = "",
) -> tuple[Dataset, CurationStats]:
    """Select, scrub, deduplicate and split a tenant's examples into a (not yet written) dataset.
    `embed` None skips near-duplicate removal (exact duplicates of question + answer still go)."""
    answers = [a for a in answers if a.tenant_id == tenant_id]
    feedback = [f for f in feedback if f.tenant_id == tenant_id]
    selected, stats = select_examples(answers, feedback, policy)
    report = ScrubReport()
    scrubbed = [scrub_example(e, report) for e in selected]
    stats.pii_replacements = dict(report.counts)
    if embed is not None:
        unique, dropped = deduplicate(scrubbed, embed, policy.dedup_threshold)
    else:
        seen: dict[str, Example] = {}
        for e in sorted(scrubbed, key=lambda e: SOURCE_RANK[e.source]):
            seen.setdefault(dedup_text(e), e)
        unique = [e for e in scrubbed if seen.get(dedup_text(e)) is e]
        dropped = [
            (e.example_id, seen[dedup_text(e)].example_id) for e in scrubbed if seen[dedup_text(e)] is not e
        ]
    stats.duplicates_removed = len(dropped)
    train, evals = assign_splits(unique, policy.eval_fraction)
    train_bytes, eval_bytes = _jsonl(train), _jsonl(evals)
    version = hashlib.sha256(b"train\x00" + train_bytes + b"eval\x00" + eval_bytes).hexdigest()[:16]
    sources: dict[str, int] = {}
    for e in unique:
        sources[e.source] = sources.get(e.source, 0) + 1
    manifest: dict[str, Any] = {
        "version": version,
        "tenant_id": tenant_id,
        "parent_version": parent_version,
        "created_at_ms": int(time.time() * 1000),
        "counts": {"train": len(train), "eval": len(evals)},
        "sources": sources,
        "lineage": {
            "train": [e.correlation_id for e in train],
            "eval": [e.correlation_id for e in evals],
        },
        "duplicates": [{"dropped": d, "kept_as": k} for d, k in dropped],
        "files": {
            "train.jsonl": hashlib.sha256(train_bytes).hexdigest(),
            "eval.jsonl": hashlib.sha256(eval_bytes).hexdigest(),
        },
        "curation": {
            **asdict(policy),
            "pii_replacements": stats.pii_replacements,
            "rejected_by_feedback": stats.rejected_by_feedback,
            "below_groundedness": stats.below_groundedness,
        },
    }
    return Dataset(tenant_id, version, tuple(train), tuple(evals), manifest), stats


# --- files -------------------------------------------------------------------------------------------


def dataset_dir(root: Path, tenant_id: str, version: str) -> Path:
    return root / tenant_id / version


def write_dataset(dataset: Dataset, root: Path) -> Path:
    """Write the dataset under `root` (idempotent: an existing version is left as it is)."""
    final = dataset_dir(root, dataset.tenant_id, dataset.version)
    if final.is_dir():
        return final
    with staged_dir(final, label=dataset.version) as staging:
        (staging / "train.jsonl").write_bytes(_jsonl(dataset.train))
        (staging / "eval.jsonl").write_bytes(_jsonl(dataset.eval))
        (staging / "manifest.json").write_text(json.dumps(dataset.manifest, indent=2, sort_keys=True))
    return final


def read_split(path: Path, tenant_id: str) -> list[Example]:
    if not path.is_file():
        return []
    return [
        Example.from_record(tenant_id, json.loads(line)) for line in path.read_text().splitlines() if line
    ]


def read_manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return data
