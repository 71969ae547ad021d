"""Canary analysis (pure): is the canary version as good as the stable one, worse, or not yet known?

The finetune's canary watch (`services.finetune.promotion.Promoter.watch_once`) collects, from the
monitor's ops API, per model version and since the canary was promoted: requests answered and failed,
mean groundedness, and feedback (thumbs down, ratings). `decide` turns the two sides into a verdict:

- ``rollback`` as soon as the canary is worse than stable past a threshold on any signal that has
  its minimum sample: thumbs-down share (``max_down_share_increase``), mean rating
  (``max_rating_drop``), groundedness (``max_groundedness_drop``), error rate
  (``max_error_rate_increase``). A stable side without feedback counts as no thumbs down and the
  canary's own mean rating is then compared with ``min_mean_rating``.
- ``widen`` (to the next rollout stage, or the full rollout after the last) once the canary has
  served ``stage_requests`` requests and got ``min_feedback`` feedback events at its current share
  without any regression. Regressions are judged on everything since the promotion (request and
  failure counts and feedback over the whole window; groundedness over the newest 1,000 requests); the
  evidence to widen is counted per stage, so each larger share is earned at the share before it.
- ``wait`` otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["wait", "rollback", "widen"]


@dataclass(frozen=True)
class VersionStats:
    requests: int = 0  # answered + failed requests attributed to the version
    failed: int = 0
    scored: int = 0  # answered requests with a groundedness score
    groundedness: float | None = None  # mean over `scored`
    feedback: int = 0  # feedback events on the version's answers
    down: int = 0
    rated: int = 0
    mean_rating: float = 0.0  # over `rated`

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @property
    def down_share(self) -> float:
        return self.down / self.feedback if self.feedback else 0.0


@dataclass(frozen=True)
class CanaryPolicy:
    min_requests: int = 20  # per side, before error rate and groundedness are compared
    min_feedback: int = 5  # canary feedback events before feedback is compared (and before widening)
    max_down_share_increase: float = 0.2
    max_rating_drop: float = 1.0
    min_mean_rating: float = 2.5  # the canary's floor when stable has no rating to compare with
    max_groundedness_drop: float = 0.15
    max_error_rate_increase: float = 0.05
    stage_requests: int = 200  # canary requests at one share before it is widened to the next

    def __post_init__(self) -> None:
        if min(self.min_requests, self.min_feedback, self.stage_requests) < 1:
            raise ValueError("canary sample sizes must be at least 1")
        thresholds = (
            self.max_down_share_increase,
            self.max_rating_drop,
            self.max_groundedness_drop,
            self.max_error_rate_increase,
        )
        if min(thresholds) < 0:
            raise ValueError("canary thresholds must be >= 0")


def check_stages(stages: Sequence[float]) -> tuple[float, ...]:
    """Canary stages: traffic shares strictly increasing within (0, 1) (the full rollout follows)."""
    checked = tuple(float(share) for share in stages)
    if any(not 0.0 < share < 1.0 for share in checked):
        raise ValueError(f"canary stages {list(checked)} must lie in (0, 1); 1.0 (full) follows the last")
    if any(b <= a for a, b in itertools.pairwise(checked)):
        raise ValueError(f"canary stages {list(checked)} must increase")
    return checked


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def regressions(canary: VersionStats, stable: VersionStats, policy: CanaryPolicy) -> list[str]:
    """Why the canary is worse than stable (empty: no regression seen with the samples so far)."""
    found = []
    if canary.feedback >= policy.min_feedback:
        increase = canary.down_share - stable.down_share
        if increase > policy.max_down_share_increase:
            found.append(
                f"thumbs-down share {canary.down_share:.2f} vs stable {stable.down_share:.2f} "
                f"(+{increase:.2f} > {policy.max_down_share_increase:.2f})"
            )
    if canary.rated >= policy.min_feedback:
        if stable.rated >= policy.min_feedback:
            drop = stable.mean_rating - canary.mean_rating
            if drop > policy.max_rating_drop:
                found.append(
                    f"mean rating {canary.mean_rating:.2f} vs stable {stable.mean_rating:.2f} "
                    f"(-{drop:.2f} > {policy.max_rating_drop:.2f})"
                )
        elif canary.mean_rating < policy.min_mean_rating:
            found.append(f"mean rating {canary.mean_rating:.2f} below {policy.min_mean_rating:.2f}")
    if (
        canary.groundedness is not None
        and stable.groundedness is not None
        and min(canary.scored, stable.scored) >= policy.min_requests
    ):
        drop = stable.groundedness - canary.groundedness
        if drop > policy.max_groundedness_drop:
            found.append(
                f"groundedness {canary.groundedness:.2f} vs stable {stable.groundedness:.2f} "
                f"(-{drop:.2f} > {policy.max_groundedness_drop:.2f})"
            )
    if min(canary.requests, stable.requests) >= policy.min_requests:
        increase = canary.error_rate - stable.error_rate
        if increase > policy.max_error_rate_increase:
            found.append(
                f"error rate {canary.error_rate:.3f} vs stable {stable.error_rate:.3f} "
                f"(+{increase:.3f} > {policy.max_error_rate_increase:.3f})"
            )
    return found


def decide(
    canary: VersionStats,
    stable: VersionStats,
    policy: CanaryPolicy,
    at_stage: VersionStats | None = None,
) -> Verdict:
    """The verdict on `canary` vs `stable` (both since the promotion); `at_stage` is the canary since
    its current share began (None: the same as `canary`, e.g. at the first stage)."""
    worse = regressions(canary, stable, policy)
    if worse:
        return Verdict("rollback", tuple(worse))
    stage = at_stage or canary
    if stage.requests >= policy.stage_requests and stage.feedback >= policy.min_feedback:
        return Verdict(
            "widen",
            (
                f"{stage.requests} requests and {stage.feedback} feedback events at this share without a "
                f"regression (thumbs-down share {canary.down_share:.2f} vs stable {stable.down_share:.2f})",
            ),
        )
    return Verdict(
        "wait",
        (
            f"canary at this share: {stage.requests} requests, {stage.feedback} feedback events "
            f"(widening needs {policy.stage_requests} and {policy.min_feedback})",
        ),
    )


def version_stats(
    requests: Iterable[dict[str, Any]],
    feedback: Iterable[dict[str, Any]],
    model: str,
    version: str,
    traffic: Iterable[dict[str, Any]] | None = None,
) -> VersionStats:
    """One version's stats from the monitor's rows: requests as ``{"model_name", "model_version",
    "failed", "groundedness"}`` dicts (ListRequests: the newest rows, a sample), feedback per model
    version as ``{"model_name", "model_version", "total", "down", "rated", "mean_rating"}``
    (GetFeedbackSummary; a version may appear once per template version, so the counts are summed), and
    the counts of every request in the window as ``{"model_name", "model_version", "requests",
    "failed"}`` (GetTraffic; without them the sample's counts are used)."""
    mine = [r for r in requests if r["model_name"] == model and r["model_version"] == version]
    scores = [float(r["groundedness"]) for r in mine if r.get("groundedness") is not None]
    counted = [t for t in traffic or () if t["model_name"] == model and t["model_version"] == version]
    total = down = rated = 0
    rating_sum = 0.0
    for f in feedback:
        if f["model_name"] == model and f["model_version"] == version:
            total += int(f["total"])
            down += int(f["down"])
            rated += int(f["rated"])
            rating_sum += float(f["mean_rating"]) * int(f["rated"])
    return VersionStats(
        requests=sum(int(t["requests"]) for t in counted) if traffic is not None else len(mine),
        failed=sum(int(t["failed"]) for t in counted)
        if traffic is not None
        else sum(1 for r in mine if r["failed"]),
        scored=len(scores),
        groundedness=sum(scores) / len(scores) if scores else None,
        feedback=total,
        down=down,
        rated=rated,
        mean_rating=rating_sum / rated if rated else 0.0,
    )
