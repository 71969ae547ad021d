"""When to fine-tune (pure): trigger policies over a tenant's state.

Each policy looks at a `TenantState` at time `now` and either fires (a `Decision` with the trigger and
why) or not. `decide` asks them in priority order, manual first, and never fires while a job of the
tenant is scheduled or running:

- `ManualPolicy`: an operator asked (gRPC TriggerJob / `llmops finetune trigger`).
- `QualityAlertPolicy`: the monitor published a QualityAlert for the tenant on one of `signals`
  (default groundedness) that no job has answered yet, and at least `min_examples` examples qualify.
- `NewExamplesPolicy`: at least `min_new_examples` examples qualified since the last job's dataset.
- `SchedulePolicy`: `interval_s` passed since the last job (or since the scheduler first saw the tenant)
  and at least `min_new_examples` (default 1) new examples qualify: no retraining on unchanged data.

Automatic triggers (all but manual) also wait `cooldown_s` after the tenant's last job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmops.finetune.v1.events_pb2 import JobTrigger


@dataclass(frozen=True)
class PendingAlert:
    signal: str
    observed: float
    threshold: float
    at: float


@dataclass(frozen=True)
class TenantState:
    tenant_id: str
    qualifying_examples: int  # examples the curation rules select now (before dedup)
    examples_at_last_job: int  # qualifying examples when the last job's dataset was curated
    last_job_at: float | None  # epoch seconds; None before the first job
    first_seen_at: float
    job_active: bool = False  # a job of the tenant is scheduled or running
    manual_requested: bool = False
    alerts: Sequence[PendingAlert] = field(default_factory=tuple)

    @property
    def new_examples(self) -> int:
        return max(self.qualifying_examples - self.examples_at_last_job, 0)


@dataclass(frozen=True)
class Decision:
    trigger: int  # JobTrigger value
    detail: str

    @property
    def trigger_name(self) -> str:
        return str(JobTrigger.Name(self.trigger))


class Policy(Protocol):
    def fires(self, state: TenantState, now: float) -> Decision | None: ...


@dataclass(frozen=True)
class ManualPolicy:
    def fires(self, state: TenantState, now: float) -> Decision | None:
        if state.manual_requested:
            return Decision(JobTrigger.JOB_TRIGGER_MANUAL, "requested by an operator")
        return None


@dataclass(frozen=True)
class QualityAlertPolicy:
    signals: frozenset[str] = frozenset({"groundedness"})
    min_examples: int = 1

    def fires(self, state: TenantState, now: float) -> Decision | None:
        relevant = [a for a in state.alerts if a.signal in self.signals]
        if not relevant or state.qualifying_examples < self.min_examples:
            return None
        alert = max(relevant, key=lambda a: a.at)
        return Decision(
            JobTrigger.JOB_TRIGGER_QUALITY_ALERT,
            f"quality alert: {alert.signal} {alert.observed:.3f} (threshold {alert.threshold:.3f})",
        )


@dataclass(frozen=True)
class NewExamplesPolicy:
    min_new_examples: int = 50

    def fires(self, state: TenantState, now: float) -> Decision | None:
        if self.min_new_examples > 0 and state.new_examples >= self.min_new_examples:
            return Decision(JobTrigger.JOB_TRIGGER_NEW_EXAMPLES, f"{state.new_examples} new curated examples")
        return None


@dataclass(frozen=True)
class SchedulePolicy:
    interval_s: float = 0.0  # 0 disables
    min_new_examples: int = 1

    def fires(self, state: TenantState, now: float) -> Decision | None:
        if self.interval_s <= 0:
            return None
        since = state.last_job_at if state.last_job_at is not None else state.first_seen_at
        if now - since >= self.interval_s and state.new_examples >= max(self.min_new_examples, 1):
            return Decision(
                JobTrigger.JOB_TRIGGER_SCHEDULE,
                f"schedule: {now - since:.0f}s since the last job, {state.new_examples} new examples",
            )
        return None


@dataclass(frozen=True)
class TriggerPolicies:
    quality_alert: QualityAlertPolicy = field(default_factory=QualityAlertPolicy)
    new_examples: NewExamplesPolicy = field(default_factory=NewExamplesPolicy)
    schedule: SchedulePolicy = field(default_factory=SchedulePolicy)
    cooldown_s: float = 0.0

    def decide(self, state: TenantState, now: float) -> Decision | None:
        """The first policy that fires, manual first; None while a job of the tenant is active."""
        if state.job_active:
            return None
        manual = ManualPolicy().fires(state, now)
        if manual is not None:
            return manual
        if state.last_job_at is not None and now - state.last_job_at < self.cooldown_s:
            return None
        automatic: tuple[Policy, ...] = (self.quality_alert, self.new_examples, self.schedule)
        for policy in automatic:
            decision = policy.fires(state, now)
            if decision is not None:
                return decision
        return None
