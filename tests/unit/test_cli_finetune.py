"""`llmops finetune jobs` output: shown metrics and the levers line (prompt templates vs fine-tuning)."""

from __future__ import annotations

from llmops.finetune.v1 import finetune_service_pb2 as pb
from llmops.finetune.v1.events_pb2 import JobState, JobTrigger

from services.cli.finetune import format_job, format_levers


def test_levers_list_prompt_templates_first_and_the_candidate_last() -> None:
    metrics = {
        "lever_candidate_eval_loss_delta": -0.2263,
        "lever_candidate_answer_f1_delta": 0.05,
        "lever_current_grounded_qa_v2_eval_loss_delta": -0.0022,
        "lever_current_grounded_qa_v2_answer_f1_delta": 0.0,
        "lever_current_grounded_qa_v2_ms_per_token_delta": 0.09,  # not shown
        "lever_current_eval_loss": 3.6,  # the baseline itself has no delta
        "heldout_candidate_eval_loss": 3.4,
    }
    assert format_levers(metrics) == (
        "current_grounded_qa_v2: answer_f1 +0.0000 eval_loss -0.0022; "
        "candidate: answer_f1 +0.0500 eval_loss -0.2263"
    )
    assert format_levers({"train_steps": 3.0}) == ""


def test_a_job_line_shows_its_levers() -> None:
    job = pb.Job(
        job_id="ft-1",
        state=JobState.JOB_STATE_SUCCEEDED,
        trigger=JobTrigger.JOB_TRIGGER_MANUAL,
        dataset_version="d1",
        metrics={"heldout_candidate_eval_loss": 3.4, "lever_candidate_eval_loss_delta": -0.2},
    )
    text = format_job(job)
    assert "succeeded" in text and "heldout_candidate_eval_loss=3.4" in text
    assert "levers on the held-out set, from current: candidate: eval_loss -0.2000" in text
