"""Model routing: pinned tenants, deterministic canary splits, promote/rollback, JSON configuration."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from services.generator.routing import (
    ModelTarget,
    RolloutEvent,
    RolloutLog,
    RoutingPolicy,
    Split,
    apply_rollout,
    stable_fraction,
)

STABLE = ModelTarget("gemma", "1")
CANDIDATE = ModelTarget("gemma", "2")
TINY = ModelTarget("tiny_llm")


def correlation_ids(count: int, seed: int) -> list[str]:
    """Random uuid4 correlation ids, from a seeded generator so a failure can be replayed."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def canary_share(policy: RoutingPolicy, ids: list[str], tenant: str = "tenant") -> float:
    return sum(policy.choose(tenant, cid) == CANDIDATE for cid in ids) / len(ids)


def test_default_serves_without_pins_or_canary() -> None:
    policy = RoutingPolicy(default=STABLE)
    assert {policy.choose("t", cid) for cid in correlation_ids(100, seed=1)} == {STABLE}


def test_pinned_tenant_wins_over_canary_and_default() -> None:
    policy = RoutingPolicy(default=STABLE, pinned={"acme": TINY}).with_canary(CANDIDATE, 0.5)
    ids = correlation_ids(200, seed=2)
    assert {policy.choose("acme", cid) for cid in ids} == {TINY}
    assert {policy.choose("other", cid) for cid in ids} == {STABLE, CANDIDATE}


def test_same_request_always_takes_the_same_route() -> None:
    ids = correlation_ids(500, seed=3)
    first = RoutingPolicy(default=STABLE).with_canary(CANDIDATE, 0.3)
    again = RoutingPolicy.from_json(first.to_json())  # a new object, as in another process
    assert [first.choose("t", cid) for cid in ids] == [again.choose("t", cid) for cid in ids]
    assert [first.choose("t", cid) for cid in ids] == [first.choose("other", cid) for cid in ids]


def test_route_point_is_sha256_of_the_correlation_id() -> None:
    # Pinned values: the hash must not depend on the process (e.g. Python's randomized hash()).
    assert stable_fraction("") == pytest.approx(0.8894159948913374)
    assert stable_fraction("req-1") == pytest.approx(0.5794485793621024)
    assert all(0.0 <= stable_fraction(cid) < 1.0 for cid in correlation_ids(1000, seed=4))


@pytest.mark.parametrize(("requests", "tolerance"), [(1_000, 0.05), (10_000, 0.02)])
def test_ninety_ten_canary_split_is_honoured(requests: int, tolerance: float) -> None:
    policy = RoutingPolicy(default=STABLE).with_canary(CANDIDATE, 0.1)
    ids = correlation_ids(requests, seed=requests)
    share = canary_share(policy, ids)
    assert abs(share - 0.1) <= tolerance, f"canary got {share:.2%} of {requests} requests"
    assert {policy.choose("t", cid) for cid in ids} == {STABLE, CANDIDATE}


def test_explicit_weighted_split_over_three_targets() -> None:
    policy = RoutingPolicy(
        default=STABLE, canary=[Split(STABLE, 0.5), Split(CANDIDATE, 0.3), Split(TINY, 0.2)]
    )
    ids = correlation_ids(10_000, seed=5)
    counts = {target: 0 for target in (STABLE, CANDIDATE, TINY)}
    for cid in ids:
        counts[policy.choose("t", cid)] += 1
    assert counts[STABLE] / 10_000 == pytest.approx(0.5, abs=0.02)
    assert counts[CANDIDATE] / 10_000 == pytest.approx(0.3, abs=0.02)
    assert counts[TINY] / 10_000 == pytest.approx(0.2, abs=0.02)


def test_zero_weight_target_gets_nothing() -> None:
    policy = RoutingPolicy(default=STABLE).with_canary(CANDIDATE, 1.0)
    assert {policy.choose("t", cid) for cid in correlation_ids(1000, seed=6)} == {CANDIDATE}


def test_raising_the_canary_share_keeps_the_requests_it_had() -> None:
    ids = correlation_ids(2000, seed=7)
    ten = RoutingPolicy(default=STABLE).with_canary(CANDIDATE, 0.1)
    fifty = ten.with_canary(CANDIDATE, 0.5)
    on_canary = [cid for cid in ids if ten.choose("t", cid) == CANDIDATE]
    assert all(fifty.choose("t", cid) == CANDIDATE for cid in on_canary)
    assert canary_share(fifty, ids) == pytest.approx(0.5, abs=0.05)


def test_with_canary_promote_and_rollback_return_new_policies() -> None:
    base = RoutingPolicy(default=STABLE, pinned={"acme": TINY})
    canary = base.with_canary(CANDIDATE, 0.1)
    assert canary.default == STABLE
    assert list(canary.canary) == [Split(CANDIDATE, 0.1), Split(STABLE, 0.9)]
    assert canary.pinned == {"acme": TINY}
    assert base.canary == ()  # unchanged

    promoted = canary.promote(CANDIDATE)
    assert promoted == RoutingPolicy(default=CANDIDATE, pinned={"acme": TINY})
    assert promoted.choose("t", "any") == CANDIDATE
    assert canary.default == STABLE  # unchanged

    rolled_back = canary.rollback()
    assert rolled_back == base
    assert {rolled_back.choose("t", cid) for cid in correlation_ids(200, seed=8)} == {STABLE}


def test_pins_can_be_added_and_removed() -> None:
    policy = RoutingPolicy(default=STABLE).with_pin("acme", CANDIDATE)
    assert policy.choose("acme", "x") == CANDIDATE
    assert policy.without_pin("acme") == RoutingPolicy(default=STABLE)


def test_policy_owns_its_collections() -> None:
    pinned = {"acme": TINY}
    canary = [Split(CANDIDATE, 0.1), Split(STABLE, 0.9)]
    policy = RoutingPolicy(default=STABLE, pinned=pinned, canary=canary)
    pinned["other"] = CANDIDATE
    canary.clear()
    assert policy.pinned == {"acme": TINY}
    assert len(policy.canary) == 2
    with pytest.raises(AttributeError):
        policy.default = CANDIDATE  # type: ignore[misc]


def test_json_round_trip() -> None:
    policy = RoutingPolicy(default=STABLE, pinned={"acme": TINY, "globex": CANDIDATE}).with_canary(
        CANDIDATE, 0.1
    )
    assert RoutingPolicy.from_json(policy.to_json()) == policy
    for simple in (RoutingPolicy(default=TINY), policy.rollback(), policy.promote(CANDIDATE)):
        assert RoutingPolicy.from_json(simple.to_json()) == simple


def test_json_form_for_configuration() -> None:
    text = """
    {"default": {"model": "gemma", "version": "1"},
     "pinned": {"acme": {"model": "tiny_llm"}},
     "canary": [{"model": "gemma", "version": "2", "weight": 0.1},
                {"model": "gemma", "version": "1", "weight": 0.9}]}
    """
    policy = RoutingPolicy.from_json(text)
    assert policy == RoutingPolicy(
        default=STABLE, pinned={"acme": TINY}, canary=[Split(CANDIDATE, 0.1), Split(STABLE, 0.9)]
    )
    assert RoutingPolicy.from_json('{"default": {"model": "tiny_llm"}}') == RoutingPolicy(default=TINY)
    assert json.loads(RoutingPolicy(default=TINY).to_json()) == {
        "default": {"model": "tiny_llm", "version": ""},
        "pinned": {},
        "canary": [],
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "no 'default'"),
        ('{"default": {"model": "m"}, "canaries": []}', "unknown keys"),
        ('{"default": {"model": ""}}', "empty model name"),
        ('{"default": {"model": "m", "version": "latest"}}', "not a Triton version number"),
        ('{"default": {"model": "m", "version": 1}}', "must be strings"),
        ('{"default": {"model": "m"}, "pinned": []}', "must be a JSON object"),
        ('{"default": {"model": "m"}, "canary": {}}', "must be a list"),
        ('{"default": {"model": "m"}, "canary": [{"model": "a", "weight": "0.5"}]}', "must be a number"),
        ('{"default": {"model": "m"}, "canary": [{"model": "a", "weight": true}]}', "must be a number"),
        ('{"default": {"model": "m"}, "canary": [{"model": "a"}]}', "must be a number"),
        (
            '{"default": {"model": "m"}, "canary": '
            '[{"model": "a", "weight": 0.5}, {"model": "b", "weight": 0.4}]}',
            "sum to",
        ),
    ],
)
def test_invalid_json_is_rejected(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RoutingPolicy.from_json(text)


@pytest.mark.parametrize(
    "canary",
    [
        [Split(CANDIDATE, 0.1), Split(STABLE, 0.8)],  # sums to 0.9
        [Split(CANDIDATE, 0.6), Split(STABLE, 0.6)],  # sums to 1.2
        [Split(CANDIDATE, 0.5), Split(CANDIDATE, 0.5)],  # same target twice
    ],
)
def test_invalid_weights_raise(canary: list[Split]) -> None:
    with pytest.raises(ValueError, match=r"sum to|more than once"):
        RoutingPolicy(default=STABLE, canary=canary)


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan"), float("inf")])
def test_split_weight_must_be_in_unit_interval(weight: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        Split(CANDIDATE, weight)


@pytest.mark.parametrize("share", [0.0, -0.2, 1.01, float("nan")])
def test_with_canary_rejects_bad_shares(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        RoutingPolicy(default=STABLE).with_canary(CANDIDATE, share)


def test_canary_of_the_default_itself_is_rejected() -> None:
    with pytest.raises(ValueError, match="already the default"):
        RoutingPolicy(default=STABLE).with_canary(ModelTarget("gemma", "1"), 0.1)


def test_model_target_text() -> None:
    assert str(STABLE) == "gemma:1"
    assert str(TINY) == "tiny_llm"
    with pytest.raises(ValueError, match="empty model name"):
        ModelTarget(" ")


# --- rollout events (the finetune's ModelVersionPromoted / ModelVersionRolledBack) -----------------------


def rollout(  # noqa: PLR0917 - a compact way to write event tables
    event_id: str,
    at_ms: int,
    kind: str,
    version: str,
    share: float = 1.0,
    restored: str = "",
    model: str = "gemma",
    tenant: str = "",
    previous: str = "",
) -> RolloutEvent:
    return RolloutEvent(event_id, at_ms, kind, model, version, share, restored, tenant, previous)  # type: ignore[arg-type]


def test_promotion_event_starts_a_canary_then_widens_it() -> None:
    base = RoutingPolicy(default=STABLE, pinned={"acme": TINY})
    canary = apply_rollout(base, rollout("e1", 1, "promoted", "2", 0.1))
    assert canary == base.with_canary(CANDIDATE, 0.1)
    ids = correlation_ids(2000, seed=11)
    assert canary_share(canary, ids) == pytest.approx(0.1, abs=0.03)
    full = apply_rollout(canary, rollout("e2", 2, "promoted", "2", 1.0))
    assert full.default == CANDIDATE and not full.canary and full.pinned == {"acme": TINY}


def test_rollback_event_ends_the_canary_and_pins_stay() -> None:
    canary = RoutingPolicy(default=STABLE, pinned={"acme": TINY}).with_canary(CANDIDATE, 0.5)
    back = apply_rollout(canary, rollout("e3", 3, "rolled_back", "2", restored="1"))
    assert back == RoutingPolicy(default=STABLE, pinned={"acme": TINY})
    # A rollback after the full rollout restores the previous version as the default.
    full = RoutingPolicy(default=CANDIDATE)
    assert apply_rollout(full, rollout("e4", 4, "rolled_back", "2", restored="1")).default == STABLE


def test_events_of_another_model_or_out_of_date_change_nothing() -> None:
    policy = RoutingPolicy(default=STABLE)
    assert apply_rollout(policy, rollout("e1", 1, "promoted", "2", 0.1, model="tiny_lora_lm")) == policy
    assert apply_rollout(policy, rollout("e2", 2, "promoted", "1", 0.1)) == policy  # already the default
    assert apply_rollout(policy, rollout("e3", 3, "rolled_back", "7", restored="1")) == policy
    assert apply_rollout(policy, rollout("e4", 4, "promoted", "", 0.1)) == policy


def test_rollout_log_gives_the_same_policy_in_any_arrival_order() -> None:
    base = RoutingPolicy(default=STABLE, pinned={"acme": TINY})
    events = [
        rollout("a", 10, "promoted", "2", 0.1),
        rollout("b", 20, "promoted", "2", 1.0),
        rollout("c", 30, "promoted", "3", 0.2),
        rollout("d", 40, "rolled_back", "3", restored="2"),
        rollout("e", 50, "promoted", "4", 0.3),
    ]
    expected = RoutingPolicy(default=CANDIDATE, pinned={"acme": TINY}).with_canary(
        ModelTarget("gemma", "4"), 0.3
    )
    rng = random.Random(5)
    for _ in range(20):
        shuffled = events[:]
        rng.shuffle(shuffled)
        log = RolloutLog(base)
        for event in shuffled + shuffled[:2]:  # replays repeat events: ignored
            log.add(event)
        assert log.policy == expected and len(log) == len(events)


def test_rollout_log_reports_changes() -> None:
    log = RolloutLog(RoutingPolicy(default=STABLE))
    assert log.add(rollout("a", 1, "promoted", "2", 0.5))
    assert not log.add(rollout("a", 1, "promoted", "2", 0.5))
    assert log.add(rollout("b", 2, "rolled_back", "2", restored="1"))
    assert log.policy == RoutingPolicy(default=STABLE)


def test_a_tenant_scoped_rollout_moves_only_that_tenants_traffic() -> None:
    """A version fine-tuned on one tenant's data serves that tenant only: its canary, its full rollout
    and its rollback leave every other tenant (and the pins) on the default."""
    base = RoutingPolicy(default=STABLE, pinned={"acme": TINY})
    ids = correlation_ids(2000, seed=12)
    canary = apply_rollout(base, rollout("e1", 1, "promoted", "2", 0.5, tenant="bakery"))
    assert canary_share(canary, ids, "bakery") == pytest.approx(0.5, abs=0.05)
    assert {canary.choose("other", cid) for cid in ids} == {STABLE}
    assert {canary.choose("acme", cid) for cid in ids} == {TINY}
    full = apply_rollout(canary, rollout("e2", 2, "promoted", "2", 1.0, tenant="bakery"))
    assert {full.choose("bakery", cid) for cid in ids} == {CANDIDATE}
    assert full.default == STABLE and {full.choose("other", cid) for cid in ids} == {STABLE}
    # Rolled back to the default: the tenant's own route is gone again.
    back = apply_rollout(full, rollout("e3", 3, "rolled_back", "2", restored="1", tenant="bakery"))
    assert back == base


def test_tenant_routes_survive_global_moves_and_the_json_form() -> None:
    scoped = apply_rollout(RoutingPolicy(default=STABLE), rollout("e1", 1, "promoted", "2", 0.2, tenant="b"))
    moved = apply_rollout(scoped, rollout("e2", 2, "promoted", "3", 0.1))
    assert moved.tenant_routes == scoped.tenant_routes and moved.canary
    assert RoutingPolicy.from_json(moved.to_json()) == moved
    with pytest.raises(ValueError, match="tenant route"):
        RoutingPolicy(default=STABLE, tenant_routes={"b": RoutingPolicy(default=STABLE, pinned={"x": TINY})})


def test_a_default_without_version_is_pinned_to_the_stable_one_before_a_rollout() -> None:
    """Triton serves version "" as its latest, which is the version being rolled out: unpinned, every
    other tenant (and the canary's stable leg) would get the tenant's fine-tuned version."""
    latest = RoutingPolicy(default=ModelTarget("gemma"))
    ids = correlation_ids(500, seed=13)
    scoped = apply_rollout(latest, rollout("e1", 1, "promoted", "2", 0.5, tenant="bakery", previous="1"))
    assert scoped.default == STABLE
    assert {scoped.choose("other", cid) for cid in ids} == {STABLE}
    assert {scoped.choose("bakery", cid) for cid in ids} == {STABLE, CANDIDATE}
    everyone = apply_rollout(latest, rollout("e2", 2, "promoted", "2", 0.1, previous="1"))
    assert {everyone.choose("t", cid) for cid in ids} == {STABLE, CANDIDATE}
    assert apply_rollout(latest, rollout("e3", 3, "rolled_back", "2", restored="1")).default == STABLE


def test_a_tenant_canary_rides_on_the_global_default_as_it_moves() -> None:
    """A tenant's canary started on the global default: a later global rollout moves the tenant's stable
    side too, and the tenant's rollback leaves it on the global default, not on a stale copy."""
    v3 = ModelTarget("gemma", "3")
    ids = correlation_ids(1000, seed=14)
    log = RolloutLog(RoutingPolicy(default=STABLE))
    log.add(rollout("a", 1, "promoted", "2", 0.1, tenant="bakery", previous="1"))
    log.add(rollout("b", 2, "promoted", "3", 1.0, previous="1"))  # a global full rollout
    assert {log.policy.choose("bakery", cid) for cid in ids} == {v3, CANDIDATE}
    assert {log.policy.choose("other", cid) for cid in ids} == {v3}
    assert RoutingPolicy.from_json(log.policy.to_json()) == log.policy
    log.add(rollout("c", 3, "rolled_back", "2", restored="1", tenant="bakery"))
    assert {log.policy.choose("bakery", cid) for cid in ids} == {v3}
    assert log.policy == RoutingPolicy(default=v3)
