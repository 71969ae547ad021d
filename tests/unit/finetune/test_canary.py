"""Canary analysis: rollback on a regression past a threshold, widen after enough good traffic, else wait."""

from __future__ import annotations

import pytest

from services.finetune.canary import CanaryPolicy, VersionStats, decide, version_stats

POLICY = CanaryPolicy(min_requests=10, min_feedback=4, stage_requests=50)
GOOD = VersionStats(
    requests=100, failed=1, scored=90, groundedness=0.8, feedback=20, down=2, rated=10, mean_rating=4.2
)


def test_too_few_samples_waits_even_when_the_canary_looks_bad() -> None:
    canary = VersionStats(requests=3, failed=3, scored=2, groundedness=0.0, feedback=3, down=3)
    verdict = decide(canary, GOOD, POLICY)
    assert verdict.action == "wait"


def test_thumbs_down_share_past_the_threshold_rolls_back() -> None:
    canary = VersionStats(requests=8, feedback=5, down=4)
    verdict = decide(canary, GOOD, POLICY)
    assert verdict.action == "rollback"
    assert "thumbs-down share 0.80 vs stable 0.10" in verdict.summary


def test_thumbs_down_within_the_threshold_does_not_roll_back() -> None:
    canary = VersionStats(requests=8, feedback=10, down=2)  # 0.2 vs 0.1: +0.1 <= 0.2
    assert decide(canary, GOOD, POLICY).action == "wait"


def test_stable_without_feedback_counts_as_no_thumbs_down() -> None:
    canary = VersionStats(requests=8, feedback=4, down=1)  # 0.25 > 0 + 0.2
    assert decide(canary, VersionStats(requests=30), POLICY).action == "rollback"


@pytest.mark.parametrize(
    ("canary", "reason"),
    [
        (VersionStats(requests=20, rated=5, mean_rating=3.0), "mean rating 3.00 vs stable 4.20"),
        (VersionStats(requests=20, scored=20, groundedness=0.5), "groundedness 0.50 vs stable 0.80"),
        (VersionStats(requests=20, failed=4), "error rate 0.200 vs stable 0.010"),
    ],
)
def test_each_signal_can_roll_back(canary: VersionStats, reason: str) -> None:
    verdict = decide(canary, GOOD, POLICY)
    assert verdict.action == "rollback" and reason in verdict.summary


def test_low_rating_without_a_stable_rating_uses_the_floor() -> None:
    canary = VersionStats(requests=20, rated=4, mean_rating=2.0)
    assert "below 2.50" in decide(canary, VersionStats(requests=20), POLICY).summary


def test_as_good_after_enough_traffic_widens() -> None:
    canary = VersionStats(requests=60, failed=0, scored=60, groundedness=0.78, feedback=6, down=1)
    verdict = decide(canary, GOOD, POLICY)
    assert verdict.action == "widen" and "60 requests" in verdict.summary


def test_enough_requests_but_too_little_feedback_still_waits() -> None:
    canary = VersionStats(requests=60, scored=60, groundedness=0.8, feedback=1)
    assert decide(canary, GOOD, POLICY).action == "wait"


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CanaryPolicy(min_feedback=0)
    with pytest.raises(ValueError, match=">= 0"):
        CanaryPolicy(max_rating_drop=-1)


def test_version_stats_from_monitor_rows() -> None:
    requests = [
        {"model_name": "m", "model_version": "2", "failed": False, "groundedness": 0.5},
        {"model_name": "m", "model_version": "2", "failed": False, "groundedness": 1.0},
        {"model_name": "m", "model_version": "2", "failed": True, "groundedness": None},
        {"model_name": "m", "model_version": "1", "failed": False, "groundedness": 0.1},
        {"model_name": "other", "model_version": "2", "failed": False, "groundedness": 0.0},
    ]
    feedback = [  # one version under two template versions: summed
        {"model_name": "m", "model_version": "2", "total": 3, "down": 1, "rated": 2, "mean_rating": 4.0},
        {"model_name": "m", "model_version": "2", "total": 1, "down": 1, "rated": 2, "mean_rating": 2.0},
        {"model_name": "m", "model_version": "1", "total": 9, "down": 0, "rated": 0, "mean_rating": 0.0},
    ]
    stats = version_stats(requests, feedback, "m", "2")
    assert stats == VersionStats(
        requests=3, failed=1, scored=2, groundedness=0.75, feedback=4, down=2, rated=4, mean_rating=3.0
    )
    assert stats.error_rate == pytest.approx(1 / 3) and stats.down_share == 0.5
    assert version_stats([], [], "m", "3") == VersionStats()
    # The counts of the whole window (GetTraffic) win over the newest-rows sample (ListRequests).
    traffic = [
        {"model_name": "m", "model_version": "2", "requests": 2500, "failed": 40},
        {"model_name": "m", "model_version": "1", "requests": 22500, "failed": 10},
    ]
    counted = version_stats(requests, feedback, "m", "2", traffic)
    assert (counted.requests, counted.failed, counted.groundedness) == (2500, 40, 0.75)
    assert version_stats(requests, feedback, "m", "3", traffic).requests == 0


def test_widening_counts_the_evidence_at_the_current_share_only() -> None:
    """Since the promotion the canary has plenty; at its new (larger) share too little yet: wait."""
    since_promotion = VersionStats(requests=80, scored=80, groundedness=0.8, feedback=8, down=1)
    at_stage = VersionStats(requests=20, scored=20, groundedness=0.8, feedback=2)
    assert decide(since_promotion, GOOD, POLICY).action == "widen"
    verdict = decide(since_promotion, GOOD, POLICY, at_stage=at_stage)
    assert verdict.action == "wait" and "20 requests" in verdict.summary


def test_regressions_are_judged_on_everything_since_the_promotion() -> None:
    since_promotion = VersionStats(requests=80, feedback=10, down=8)
    fine_at_stage = VersionStats(requests=60, feedback=5, down=0)
    assert decide(since_promotion, GOOD, POLICY, at_stage=fine_at_stage).action == "rollback"
