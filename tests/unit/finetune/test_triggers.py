"""Trigger policies: each fires on its condition only; manual first; never while a job is active."""

from __future__ import annotations

from dataclasses import replace

from llmops.finetune.v1.events_pb2 import JobTrigger

from services.finetune.triggers import (
    NewExamplesPolicy,
    PendingAlert,
    QualityAlertPolicy,
    SchedulePolicy,
    TenantState,
    TriggerPolicies,
)

NOW = 10_000.0
IDLE = TenantState(
    tenant_id="t1", qualifying_examples=5, examples_at_last_job=5, last_job_at=NOW - 100, first_seen_at=0.0
)
POLICIES = TriggerPolicies(
    quality_alert=QualityAlertPolicy(min_examples=3),
    new_examples=NewExamplesPolicy(10),
    schedule=SchedulePolicy(interval_s=1000),
    cooldown_s=50,
)
ALERT = PendingAlert("groundedness", 0.3, 0.5, NOW - 5)


def test_nothing_fires_without_a_reason() -> None:
    assert POLICIES.decide(IDLE, NOW) is None


def test_enough_new_examples() -> None:
    assert POLICIES.decide(replace(IDLE, qualifying_examples=14), NOW) is None
    decision = POLICIES.decide(replace(IDLE, qualifying_examples=15), NOW)
    assert decision is not None and decision.trigger == JobTrigger.JOB_TRIGGER_NEW_EXAMPLES
    assert "10 new" in decision.detail


def test_quality_alert_needs_a_relevant_signal_and_examples() -> None:
    decision = POLICIES.decide(replace(IDLE, alerts=(ALERT,)), NOW)
    assert decision is not None and decision.trigger == JobTrigger.JOB_TRIGGER_QUALITY_ALERT
    assert POLICIES.decide(replace(IDLE, alerts=(replace(ALERT, signal="error_rate"),)), NOW) is None
    assert (
        POLICIES.decide(replace(IDLE, alerts=(ALERT,), qualifying_examples=2, examples_at_last_job=0), NOW)
        is None
    )


def test_schedule_fires_after_the_interval_with_new_data_only() -> None:
    due = replace(IDLE, last_job_at=NOW - 1000)
    assert POLICIES.decide(due, NOW) is None  # nothing new: no retraining on unchanged data
    decision = POLICIES.decide(replace(due, qualifying_examples=6), NOW)
    assert decision is not None and decision.trigger == JobTrigger.JOB_TRIGGER_SCHEDULE
    first = replace(IDLE, last_job_at=None, examples_at_last_job=0, first_seen_at=NOW - 999)
    assert (
        TriggerPolicies(new_examples=NewExamplesPolicy(0), schedule=SchedulePolicy(1000)).decide(first, NOW)
        is None
    )
    assert (
        TriggerPolicies(schedule=SchedulePolicy(0)).decide(replace(due, qualifying_examples=6), NOW) is None
    )


def test_manual_wins_and_ignores_the_cooldown() -> None:
    state = replace(IDLE, manual_requested=True, alerts=(ALERT,), last_job_at=NOW - 1)
    decision = POLICIES.decide(state, NOW)
    assert decision is not None and decision.trigger == JobTrigger.JOB_TRIGGER_MANUAL


def test_cooldown_holds_automatic_triggers() -> None:
    state = replace(IDLE, qualifying_examples=100, last_job_at=NOW - 10)
    assert POLICIES.decide(state, NOW) is None
    assert POLICIES.decide(state, NOW + 40) is not None


def test_nothing_fires_while_a_job_is_active() -> None:
    state = replace(IDLE, qualifying_examples=100, alerts=(ALERT,), manual_requested=True, job_active=True)
    assert POLICIES.decide(state, NOW) is None


def test_priority_alert_before_new_examples() -> None:
    decision = POLICIES.decide(replace(IDLE, qualifying_examples=100, alerts=(ALERT,)), NOW)
    assert decision is not None and decision.trigger == JobTrigger.JOB_TRIGGER_QUALITY_ALERT
