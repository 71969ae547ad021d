"""Model routing: which Triton model (and version) serves a request.

A tenant pinned to a target always gets it. Otherwise, while a canary is configured, each request
is routed by a stable hash of its correlation id, so a request (and every redelivery of it) takes
the same route and the shares of the split hold over many requests. Otherwise the default serves.

Policies are immutable: the fine-tune scheduler's promote and rollback events build new policies
with :meth:`RoutingPolicy.with_canary`, :meth:`RoutingPolicy.promote` and
:meth:`RoutingPolicy.rollback`. JSON form (for an environment variable or a file)::

    {"default": {"model": "gemma", "version": "1"},
     "pinned": {"tenant-a": {"model": "gemma", "version": "2"}},
     "canary": [{"model": "gemma", "version": "2", "weight": 0.1},
                {"model": "gemma", "version": "1", "weight": 0.9}]}

``version`` may be omitted or "" (Triton's latest/default version); ``pinned`` and ``canary`` may
be omitted.

Rollout events (`RolloutEvent`: the finetune's ModelVersionPromoted and ModelVersionRolledBack) move the
policy: `RolloutLog` folds every event seen over the configured policy in event-time order (occurred_at,
then event id), so every generator replica, and a replica that replays both topics after a restart in
whatever interleaving, arrives at the same policy. An event only moves the policy when its model is the
default's model (a promoted version replaces versions of the same model; a generator serving another
model ignores it), and pins are never changed by events.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

WEIGHT_TOLERANCE = 1e-6
"""How far the canary weights may sum from 1 (floating-point rounding)."""


@dataclass(frozen=True)
class ModelTarget:
    model: str
    version: str = ""  # "" means Triton's latest/default version

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("model target has an empty model name")
        if self.version and not self.version.isdigit():
            raise ValueError(f"model version {self.version!r} is not a Triton version number")

    def __str__(self) -> str:
        return f"{self.model}:{self.version}" if self.version else self.model


@dataclass(frozen=True)
class Split:
    target: ModelTarget
    weight: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and 0.0 <= self.weight <= 1.0):
            raise ValueError(f"weight of {self.target} is {self.weight}, not in [0, 1]")


def stable_fraction(key: str) -> float:
    """A uniform number in [0, 1) that depends only on ``key`` (sha256), the same in every process."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class RoutingPolicy:
    default: ModelTarget
    pinned: Mapping[str, ModelTarget] = field(default_factory=dict)
    canary: Sequence[Split] = ()

    def __post_init__(self) -> None:
        # Own copies, so the caller's dict or list cannot change the policy afterwards.
        object.__setattr__(self, "pinned", dict(self.pinned))
        object.__setattr__(self, "canary", tuple(self.canary))
        for tenant in self.pinned:
            if not tenant:
                raise ValueError("a pinned tenant id is empty")
        if self.canary:
            total = math.fsum(split.weight for split in self.canary)
            if abs(total - 1.0) > WEIGHT_TOLERANCE:
                raise ValueError(f"canary weights sum to {total}, not 1")
            targets = [split.target for split in self.canary]
            if len(set(targets)) != len(targets):
                raise ValueError("a canary target appears more than once")

    def choose(self, tenant_id: str, correlation_id: str) -> ModelTarget:
        """The target for one request: the tenant's pin, else the canary split, else the default."""
        pinned = self.pinned.get(tenant_id)
        if pinned is not None:
            return pinned
        if not self.canary:
            return self.default
        point = stable_fraction(correlation_id)
        cumulative = 0.0
        for split in self.canary:
            cumulative += split.weight
            if point < cumulative:
                return split.target
        # Rounding left the cumulative weight a hair under 1: the last split with any weight.
        return next(split.target for split in reversed(self.canary) if split.weight > 0)

    def with_canary(self, new: ModelTarget, share: float) -> RoutingPolicy:
        """Send ``share`` of unpinned traffic to ``new`` and the rest to the default (replaces any canary)."""
        if not (math.isfinite(share) and 0.0 < share <= 1.0):
            raise ValueError(f"canary share {share} is not in (0, 1]")
        if new == self.default:
            raise ValueError(f"canary target {new} is already the default")
        # The new target first: raising its share keeps the requests it already had.
        return RoutingPolicy(
            default=self.default,
            pinned=self.pinned,
            canary=(Split(new, share), Split(self.default, 1.0 - share)),
        )

    def promote(self, target: ModelTarget) -> RoutingPolicy:
        """``target`` becomes the default and the canary ends; pins are kept."""
        return RoutingPolicy(default=target, pinned=self.pinned)

    def rollback(self) -> RoutingPolicy:
        """The canary ends and the default keeps serving; pins are kept."""
        return RoutingPolicy(default=self.default, pinned=self.pinned)

    def with_pin(self, tenant_id: str, target: ModelTarget) -> RoutingPolicy:
        return RoutingPolicy(
            default=self.default, pinned={**self.pinned, tenant_id: target}, canary=self.canary
        )

    def without_pin(self, tenant_id: str) -> RoutingPolicy:
        pinned = {tenant: target for tenant, target in self.pinned.items() if tenant != tenant_id}
        return RoutingPolicy(default=self.default, pinned=pinned, canary=self.canary)

    def to_json(self) -> str:
        return json.dumps(
            {
                "default": _target_json(self.default),
                "pinned": {tenant: _target_json(target) for tenant, target in self.pinned.items()},
                "canary": [{**_target_json(split.target), "weight": split.weight} for split in self.canary],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RoutingPolicy:
        """Parse the JSON form; ValueError saying what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"routing policy is not valid JSON: {exc}") from exc
        obj = _object(data, "routing policy", {"default", "pinned", "canary"})
        if "default" not in obj:
            raise ValueError("routing policy has no 'default' target")
        pinned = _object(obj.get("pinned", {}), "'pinned'", None)
        canary = obj.get("canary", [])
        if not isinstance(canary, list):
            raise ValueError("routing policy 'canary' must be a list")
        return cls(
            default=_target(obj["default"], "'default'"),
            pinned={tenant: _target(value, f"pinned[{tenant!r}]") for tenant, value in pinned.items()},
            canary=[_split(value, f"canary[{i}]") for i, value in enumerate(canary)],
        )


def _target_json(target: ModelTarget) -> dict[str, str]:
    return {"model": target.model, "version": target.version}


def _object(value: Any, where: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}")
    return value


def _target(value: Any, where: str, extra: frozenset[str] = frozenset()) -> ModelTarget:
    obj = _object(value, where, {"model", "version", *extra})
    model = obj.get("model")
    version = obj.get("version", "")
    if not isinstance(model, str) or not isinstance(version, str):
        raise ValueError(f"{where}: 'model' and 'version' must be strings")
    try:
        return ModelTarget(model=model, version=version)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _split(value: Any, where: str) -> Split:
    target = _target(value, where, frozenset({"weight"}))
    weight = value.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError(f"{where}: 'weight' must be a number")
    try:
        return Split(target=target, weight=float(weight))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


# --- rollout events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutEvent:
    """A promotion (``traffic_share`` of unpinned traffic to ``version``; 1 = full rollout) or a
    rollback (``version`` stops serving; ``restored`` serves again)."""

    event_id: str
    at_ms: int
    kind: Literal["promoted", "rolled_back"]
    model: str
    version: str
    traffic_share: float = 1.0
    restored: str = ""

    @property
    def target(self) -> ModelTarget:
        return ModelTarget(self.model, self.version)


def apply_rollout(policy: RoutingPolicy, event: RolloutEvent) -> RoutingPolicy:
    """The policy after one rollout event (unchanged when the event does not concern its default model
    or would not change anything, e.g. a repeated or out-of-date event)."""
    if event.model != policy.default.model or not event.version.isdigit():
        return policy
    if event.kind == "promoted":
        return _promoted(policy, event)
    return _rolled_back(policy, event)


def _promoted(policy: RoutingPolicy, event: RolloutEvent) -> RoutingPolicy:
    if event.traffic_share >= 1.0 - WEIGHT_TOLERANCE:
        return policy.promote(event.target)
    if event.target == policy.default or not (0.0 < event.traffic_share < 1.0):
        return policy
    return policy.with_canary(event.target, event.traffic_share)


def _rolled_back(policy: RoutingPolicy, event: RolloutEvent) -> RoutingPolicy:
    target = event.target
    if target != policy.default and target in {split.target for split in policy.canary}:
        return policy.rollback()
    if target == policy.default and event.restored.isdigit() and event.restored != event.version:
        return policy.promote(ModelTarget(event.model, event.restored))  # rolled back after full rollout
    return policy


class RolloutLog:
    """The configured policy with every rollout event seen applied in event-time order."""

    def __init__(self, base: RoutingPolicy) -> None:
        self.base = base
        self._events: dict[str, RolloutEvent] = {}
        self.policy = base

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: RolloutEvent) -> bool:
        """Record an event (a repeated event id changes nothing); True when the policy changed."""
        if event.event_id in self._events:
            return False
        self._events[event.event_id] = event
        before = self.policy
        policy = self.base
        for seen in sorted(self._events.values(), key=lambda e: (e.at_ms, e.event_id)):
            policy = apply_rollout(policy, seen)
        self.policy = policy
        return policy != before
