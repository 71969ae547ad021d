"""Model routing: which Triton model (and version) serves a request.

A tenant pinned to a target always gets it. Otherwise a tenant with a route of its own (set by
tenant-scoped rollouts: a version fine-tuned on one tenant's data serves that tenant only) follows it.
Otherwise, while a canary is configured, each request is routed by a stable hash of its correlation id,
so a request (and every redelivery of it) takes the same route and the shares of the split hold over
many requests. Otherwise the default serves.

Policies are immutable: the fine-tune scheduler's promote and rollback events build new policies
with :meth:`RoutingPolicy.with_canary`, :meth:`RoutingPolicy.promote` and
:meth:`RoutingPolicy.rollback`. JSON form (for an environment variable or a file)::

    {"default": {"model": "gemma", "version": "1"},
     "pinned": {"tenant-a": {"model": "gemma", "version": "2"}},
     "canary": [{"model": "gemma", "version": "2", "weight": 0.1},
                {"model": "gemma", "version": "1", "weight": 0.9}],
     "tenants": {"tenant-b": {"default": {"model": "gemma", "version": "3"}, "canary": []}}}

``version`` may be omitted or "" (Triton's latest/default version); ``pinned``, ``canary`` and
``tenants`` may be omitted.

Rollout events (`RolloutEvent`: the finetune's ModelVersionPromoted and ModelVersionRolledBack) move the
policy: `RolloutLog` folds every event seen over the configured policy in event-time order (occurred_at,
then event id), so every generator replica, and a replica that replays both topics after a restart in
whatever interleaving, arrives at the same policy. An event only moves the policy when its model is the
default's model (a promoted version replaces versions of the same model; a generator serving another
model ignores it), and pins are never changed by events. A default without a version number (Triton's
latest) is pinned to the event's stable version first: the latest is the version being rolled out. An
event scoped to a tenant moves only that tenant's route: created on its first event, its stable side
follows the global default (a global move moves it too) until the tenant's own version is fully rolled
out; dropped when it is just the global default again.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    # Routes of single tenants (tenant-scoped rollouts): a default and a canary each.
    tenant_routes: Mapping[str, RoutingPolicy] = field(default_factory=dict)
    # A tenant route whose stable side is whatever the global default is now (its canary started on
    # top of the global default): it follows global moves instead of keeping a copy of the default.
    follows_default: bool = False

    def __post_init__(self) -> None:
        # Own copies, so the caller's dict or list cannot change the policy afterwards.
        object.__setattr__(self, "pinned", dict(self.pinned))
        object.__setattr__(self, "canary", tuple(self.canary))
        object.__setattr__(self, "tenant_routes", dict(self.tenant_routes))
        for tenant in [*self.pinned, *self.tenant_routes]:
            if not tenant:
                raise ValueError("a pinned or routed tenant id is empty")
        if any(route.pinned or route.tenant_routes for route in self.tenant_routes.values()):
            raise ValueError("a tenant route has only a default and a canary")
        if self.follows_default and (self.pinned or self.tenant_routes):
            raise ValueError("only a tenant route follows the default")
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
        route = self.tenant_routes.get(tenant_id)
        if route is not None:
            return route.rebased(self.default).choose(tenant_id, correlation_id)
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
        return replace(self, canary=(Split(new, share), Split(self.default, 1.0 - share)))

    def promote(self, target: ModelTarget) -> RoutingPolicy:
        """``target`` becomes the default and the canary ends; pins and tenant routes are kept (a tenant
        route promoted to its own version no longer follows the global default)."""
        return replace(self, default=target, canary=(), follows_default=False)

    def rollback(self) -> RoutingPolicy:
        """The canary ends and the default keeps serving; pins and tenant routes are kept."""
        return replace(self, canary=())

    def with_pin(self, tenant_id: str, target: ModelTarget) -> RoutingPolicy:
        return replace(self, pinned={**self.pinned, tenant_id: target})

    def without_pin(self, tenant_id: str) -> RoutingPolicy:
        return replace(self, pinned={t: target for t, target in self.pinned.items() if t != tenant_id})

    def rebased(self, default: ModelTarget) -> RoutingPolicy:
        """A following route with `default` (the global default now) as its stable side."""
        if not self.follows_default or default == self.default:
            return self
        canary = [Split(default if s.target == self.default else s.target, s.weight) for s in self.canary]
        if len({s.target for s in canary}) != len(canary):  # its canary became the global default
            canary = []
        return replace(self, default=default, canary=canary)

    def route_of(self, tenant_id: str) -> RoutingPolicy:
        """The tenant's own route on today's global default, or a fresh one that follows it."""
        route = self.tenant_routes.get(tenant_id)
        if route is None:
            return RoutingPolicy(default=self.default, follows_default=True)
        return route.rebased(self.default)

    def with_route(self, tenant_id: str, route: RoutingPolicy) -> RoutingPolicy:
        """The tenant takes `route` (dropped when it is just the global default again)."""
        routes = {t: r for t, r in self.tenant_routes.items() if t != tenant_id}
        if route.canary or not (route.follows_default or route.default == self.default):
            routes[tenant_id] = route
        return replace(self, tenant_routes=routes)

    def _route_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "default": _target_json(self.default),
            "canary": [{**_target_json(split.target), "weight": split.weight} for split in self.canary],
        }
        if self.follows_default:
            data["follows_default"] = True
        return data

    def to_json(self) -> str:
        data = {
            **self._route_json(),
            "pinned": {tenant: _target_json(target) for tenant, target in self.pinned.items()},
        }
        if self.tenant_routes:
            data["tenants"] = {tenant: route._route_json() for tenant, route in self.tenant_routes.items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RoutingPolicy:
        """Parse the JSON form; ValueError saying what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"routing policy is not valid JSON: {exc}") from exc
        return cls._from_obj(data, "routing policy", {"default", "pinned", "canary", "tenants"})

    @classmethod
    def _from_obj(cls, data: Any, where: str, allowed: set[str]) -> RoutingPolicy:
        obj = _object(data, where, allowed)
        if "default" not in obj:
            raise ValueError(f"{where} has no 'default' target")
        pinned = _object(obj.get("pinned", {}), "'pinned'", None)
        tenants = _object(obj.get("tenants", {}), "'tenants'", None)
        canary = obj.get("canary", [])
        if not isinstance(canary, list):
            raise ValueError(f"{where}: 'canary' must be a list")
        follows = obj.get("follows_default", False)
        if not isinstance(follows, bool):
            raise ValueError(f"{where}: 'follows_default' must be true or false")
        return cls(
            default=_target(obj["default"], "'default'"),
            pinned={tenant: _target(value, f"pinned[{tenant!r}]") for tenant, value in pinned.items()},
            canary=[_split(value, f"canary[{i}]") for i, value in enumerate(canary)],
            tenant_routes={
                tenant: cls._from_obj(value, f"tenants[{tenant!r}]", {"default", "canary", "follows_default"})
                for tenant, value in tenants.items()
            },
            follows_default=follows,
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
    tenant: str = ""  # the tenant whose route moves; "": every tenant's unpinned traffic
    previous: str = ""  # a promotion's stable version (what the new version was compared with)

    @property
    def stable_version(self) -> str:
        """The numbered version that serves beside (or instead of) this event's version."""
        return self.previous if self.kind == "promoted" else self.restored

    @property
    def target(self) -> ModelTarget:
        return ModelTarget(self.model, self.version)


def apply_rollout(policy: RoutingPolicy, event: RolloutEvent) -> RoutingPolicy:
    """The policy after one rollout event (unchanged when the event does not concern its default model
    or would not change anything, e.g. a repeated or out-of-date event)."""
    if event.model != policy.default.model or not event.version.isdigit():
        return policy
    if not policy.default.version and event.stable_version.isdigit():
        # Triton serves version "" as its latest, which is now the version being rolled out: name the
        # stable one, or every request (and every other tenant) would get the new version.
        policy = replace(policy, default=ModelTarget(policy.default.model, event.stable_version))
    if event.tenant:
        return policy.with_route(event.tenant, _moved(policy.route_of(event.tenant), event))
    return _moved(policy, event)


def _moved(policy: RoutingPolicy, event: RolloutEvent) -> RoutingPolicy:
    return _promoted(policy, event) if event.kind == "promoted" else _rolled_back(policy, event)


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
