"""The evaluation harness and the gate: metrics, side-by-side reports, template comparison, decisions."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from services.finetune.curation import Example
from services.finetune.evaluation import (
    EvalReport,
    GateConfig,
    Generation,
    System,
    compare,
    compare_levers,
    compare_templates,
    evaluate,
    gate,
    side_by_side_metrics,
    template_system,
    token_f1,
)
from services.generator.prompts import TemplateRegistry


def example(q: str, a: str, context: str = "") -> Example:
    return Example("id-" + q, "t", "c-" + q, q, (context,) if context else (), a, "accepted", None, 0)


EXAMPLES = [
    example(
        "How long is feedback kept?", "Feedback is kept for ninety days.", "Feedback is kept for ninety days."
    ),
    example("What caps parallelism?", "The partition count.", "The partition count caps parallel consumers."),
]


class Lookup:
    """A fake model: answers from a table keyed by a substring of the prompt; fixed per-token loss."""

    def __init__(self, name: str, answers: dict[str, str], loss_per_token: float | None = 1.0) -> None:
        self.name = name
        self.answers = answers
        self.loss_per_token = loss_per_token
        self.prompts: list[str] = []

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        self.prompts.append(prompt)
        for key, answer in self.answers.items():
            if key in prompt:
                return Generation(answer, len(answer.split()))
        return Generation("", 0)

    def answer_loss(self, prompt: str, answer: str) -> tuple[float, int] | None:
        if self.loss_per_token is None:
            return None
        n = len(answer.split())
        return self.loss_per_token * n, n


def render(e: Example) -> str:
    return f"Q: {e.question}\nA:"


def test_token_f1() -> None:
    assert token_f1("The partition count.", "the partition count") == 1.0
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert token_f1("partition", "the partition count") == pytest.approx(0.5)
    assert token_f1("nothing alike", "the partition count") == 0.0


def test_evaluate_reports_every_metric() -> None:
    model = Lookup("m", {"feedback": "Feedback is kept for ninety days.", "parallelism": "No idea."}, 0.5)
    report = evaluate(System("m", model, render), EXAMPLES)
    assert report.examples == 2
    assert report.answer_f1 == pytest.approx(0.5)
    assert report.eval_loss == pytest.approx(0.5) and report.perplexity == pytest.approx(math.exp(0.5))
    assert report.grounded_examples == 2 and report.groundedness == pytest.approx(0.5)
    assert report.latency_ms_p50 >= 0 and report.ms_per_token >= 0
    assert report.outputs == ("Feedback is kept for ninety days.", "No idea.")


def test_a_model_that_cannot_score_has_no_loss() -> None:
    report = evaluate(System("remote", Lookup("r", {}, None), render), EXAMPLES)
    assert report.eval_loss is None and report.perplexity is None
    assert "eval_loss" not in report.metrics()


def test_compare_templates_side_by_side_on_the_same_examples() -> None:
    registry = TemplateRegistry()
    v1, v2 = registry.get("grounded_qa", "v1"), registry.get("grounded_qa", "v2")
    model = Lookup("m", {"Question: How long": "Feedback is kept for ninety days."})
    result = compare_templates(model, v1, v2, EXAMPLES)
    assert (result.a.label, result.b.label) == ("grounded_qa@v1", "grounded_qa@v2")
    assert result.a.examples == result.b.examples == 2
    assert "[1] Feedback is kept for ninety days." in model.prompts[1]  # passages as numbered lines
    names = [row[0] for row in result.rows()]
    assert {"answer_f1", "eval_loss", "groundedness"} <= set(names)
    table = result.table()
    assert "grounded_qa@v1" in table and "grounded_qa@v2" in table and "answer_f1" in table
    flat = side_by_side_metrics({"heldout": result})
    assert "heldout_grounded_qa@v1_answer_f1" in flat and "heldout_grounded_qa@v2_answer_f1" in flat


def test_levers_put_prompt_templates_and_fine_tuning_side_by_side() -> None:
    """Which lever pays: the current model as served, under another template, and the candidate, all
    on the same examples, each with its delta from current."""
    registry = TemplateRegistry()
    served = Lookup("current", {}, 2.0)  # answers nothing under the served format
    # Under grounded_qa v2 the same model answers the first question right (prompt engineering pays).
    prompted = Lookup("current", {"passages below": "Feedback is kept for ninety days."}, 2.0)
    tuned = Lookup(
        "candidate", {"Q: How long": "Feedback is kept for ninety days.", "Q: What": "The count."}, 1.0
    )
    baseline = evaluate(System("current", served, render), EXAMPLES)
    levers = compare_levers(
        baseline,
        [
            evaluate(System("candidate", tuned, render), EXAMPLES),  # an existing report is kept as is
            template_system("current+grounded_qa@v2", prompted, registry.get("grounded_qa", "v2")),
        ],
        EXAMPLES,
    )
    labels = [label for label, _, _ in levers.rows()]
    assert labels == ["current", "candidate", "current+grounded_qa@v2"]
    flat = levers.metrics()
    assert flat["lever_current_answer_f1"] == pytest.approx(0.0)
    assert flat["lever_current_grounded_qa_v2_answer_f1_delta"] == pytest.approx(0.5)
    assert flat["lever_candidate_answer_f1_delta"] > flat["lever_current_grounded_qa_v2_answer_f1_delta"]
    assert flat["lever_candidate_eval_loss_delta"] == pytest.approx(-1.0)
    assert "lever_current_answer_f1_delta" not in flat  # the baseline has no delta
    table = levers.table()
    assert "current+grounded_qa@v2" in table and "(+0.5000)" in table


def report(label: str = "x", **values: float | None) -> EvalReport:
    base = EvalReport(label, 10, 0.5, 2.0, math.exp(2.0), 0.8, 10, 10.0, 10.0, 1.0)
    return replace(base, **values)  # type: ignore[arg-type]


CONFIG = GateConfig(margin=0.05)


def test_a_better_candidate_is_promoted() -> None:
    decision = gate(CONFIG, candidate=report(eval_loss=1.9), current=report(eval_loss=2.0))
    assert decision.promote and decision.improvement == pytest.approx(0.1)
    assert decision.metrics()["gate_promote"] == 1.0


def test_an_improvement_below_the_margin_is_not_enough() -> None:
    assert not gate(CONFIG, candidate=report(eval_loss=1.97), current=report(eval_loss=2.0)).promote


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (report(eval_loss=1.5, answer_f1=0.3), "answer_f1 worse"),
        (report(eval_loss=1.5, groundedness=0.5), "groundedness worse"),
        (report(eval_loss=1.5, ms_per_token=5.0), "latency"),
    ],
)
def test_guards_block_a_candidate_that_regresses_elsewhere(candidate: EvalReport, why: str) -> None:
    decision = gate(CONFIG, candidate=candidate, current=report())
    assert not decision.promote and any(why in r for r in decision.reasons)


def test_the_regression_set_guards_against_forgetting() -> None:
    decision = gate(
        CONFIG,
        candidate=report(eval_loss=1.5),
        current=report(),
        candidate_regression=report(eval_loss=2.5),
        current_regression=report(eval_loss=2.0),
    )
    assert not decision.promote and "regression set" in decision.reasons[0]


def test_no_held_out_examples_no_promotion() -> None:
    assert not gate(CONFIG, candidate=report(examples=0, eval_loss=0.1), current=report()).promote
    assert not gate(CONFIG, candidate=report(eval_loss=None), current=report()).promote


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        GateConfig(margin=-0.1)


@pytest.mark.parametrize("primary", ["eval_loss", "answer_f1"])
def test_a_candidate_worse_than_current_is_never_promoted(primary: str) -> None:
    """Property over random reports and configs: worse (or equal) on the primary metric -> kept out."""
    rng = random.Random(7)
    for _ in range(2000):
        config = GateConfig(
            primary=primary,  # type: ignore[arg-type]
            margin=rng.choice([0.0, 0.01, 0.1]),
            regression_tolerance=rng.uniform(0, 10),
            f1_tolerance=rng.uniform(0, 1),
            groundedness_tolerance=rng.uniform(0, 1),
            max_latency_ratio=rng.uniform(1, 100),
        )
        current = report(eval_loss=rng.uniform(0.5, 5), answer_f1=rng.uniform(0, 1))
        if primary == "eval_loss":
            candidate = report(eval_loss=current.eval_loss + rng.uniform(0, 2), answer_f1=rng.uniform(0, 1))  # type: ignore[operator]
        else:
            candidate = report(
                answer_f1=current.answer_f1 - rng.uniform(0, current.answer_f1), eval_loss=rng.uniform(0, 5)
            )
        regression = report(eval_loss=rng.uniform(0, 5), answer_f1=rng.uniform(0, 1))
        decision = gate(
            config,
            candidate=candidate,
            current=current,
            candidate_regression=regression,
            current_regression=regression,
        )
        assert not decision.promote, (config, candidate, current)


def test_compare_runs_both_systems_on_the_same_examples() -> None:
    a, b = Lookup("a", {}), Lookup("b", {})
    compare(System("a", a, render), System("b", b, render), EXAMPLES)
    assert a.prompts == b.prompts
