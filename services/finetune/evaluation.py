"""The evaluation harness and the promotion gate (pure, given a model behind `CompletionModel`).

`evaluate` runs one *system* (a model plus a prompt renderer) over an eval set and reports:

- ``answer_f1``: mean token F1 of the greedy generation against the reference answer (SQuAD-style:
  lower-cased alphanumeric tokens, bag overlap);
- ``eval_loss``: mean negative log-likelihood per reference-answer token given the prompt, and
  ``perplexity`` = exp(eval_loss) (None for models that cannot score, e.g. a remote endpoint);
- ``groundedness``: the monitor's groundedness of the generated answer against the example's context
  (``services.monitor.quality.groundedness``, imported), over examples that have a context;
- ``latency_ms_p50`` / ``latency_ms_mean``: wall time of one generation (after one untimed warm-up
  call), and ``ms_per_token``: generation time per generated token (what the latency guard compares,
  so a model that answers longer is not taken for a slower one).

`compare` runs two systems on the same examples and reports side by side (candidate vs current model,
or one model under two prompt-template versions: `template_system`). `Levers` puts the two levers a
team has next to each other on one eval set: the current model under other prompt-template versions
(prompt engineering) and the fine-tuned candidate (fine-tuning), each as a delta from the current
model as it is served, so the table says which lever pays.

`gate` decides promotion from the reports on the held-out split and on the fixed regression set
(`services.finetune.regression`): the candidate must beat current on the primary metric of the held-out
split by at least `margin` (a margin below 0 is refused), and it must not fall behind on the guards:
the regression set's primary metric (by more than `regression_tolerance`), answer F1 and groundedness
(by more than their tolerances), latency per token (at most `max_latency_ratio` times current's). A candidate
that is worse than current on the primary metric is therefore never promoted.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from services.finetune.curation import Example
from services.monitor.quality import groundedness

_TOKEN = re.compile(r"[^\W_]+")

Metric = Literal["eval_loss", "answer_f1"]
LOWER_IS_BETTER = {
    "eval_loss": True,
    "perplexity": True,
    "latency_ms_p50": True,
    "latency_ms_mean": True,
    "ms_per_token": True,
}


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # tokens generated (latency per token compares models that answer at different lengths)


class CompletionModel(Protocol):
    name: str

    def generate(self, prompt: str, max_new_tokens: int) -> Generation: ...

    def answer_loss(self, prompt: str, answer: str) -> tuple[float, int] | None:
        """(summed NLL of the answer's tokens, token count), or None when the model cannot score."""
        ...


Render = Callable[[Example], str]


@dataclass(frozen=True)
class System:
    """What is evaluated: a model and how it is prompted (label: e.g. "candidate", "grounded_qa@v2")."""

    label: str
    model: CompletionModel
    render: Render


@dataclass(frozen=True)
class EvalReport:
    label: str
    examples: int
    answer_f1: float
    eval_loss: float | None
    perplexity: float | None
    groundedness: float | None
    grounded_examples: int
    latency_ms_p50: float
    latency_ms_mean: float
    ms_per_token: float
    outputs: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def metric(self, name: str) -> float | None:
        value = getattr(self, name)
        return None if value is None else float(value)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Numeric metrics (None left out), names prefixed, for events and JSON."""
        values = {k: v for k, v in asdict(self).items() if k not in {"label", "outputs"}}
        return {f"{prefix}{k}": float(v) for k, v in values.items() if v is not None}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1; 1.0 when both are empty, 0.0 when exactly one is."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def evaluate(system: System, examples: Sequence[Example], *, max_new_tokens: int = 48) -> EvalReport:
    f1s: list[float] = []
    latencies: list[float] = []
    grounded: list[float] = []
    outputs: list[str] = []
    nll, scored_tokens, can_score = 0.0, 0, True
    generated_tokens, generate_ms = 0, 0.0
    if examples:  # one untimed warm-up call: the first call of a model pays one-off setup costs
        system.model.generate(system.render(examples[0]), 1)
    for example in examples:
        prompt = system.render(example)
        started = time.perf_counter()
        generation = system.model.generate(prompt, max_new_tokens)
        latencies.append((time.perf_counter() - started) * 1000)
        generated_tokens += max(generation.tokens, 1)
        generate_ms += latencies[-1]
        output = generation.text
        outputs.append(output)
        f1s.append(token_f1(output, example.answer))
        if example.context:
            score = groundedness(output, example.context)
            if score is not None:
                grounded.append(score)
        if can_score:
            scored = system.model.answer_loss(prompt, example.answer)
            if scored is None:
                can_score = False
            else:
                nll += scored[0]
                scored_tokens += scored[1]
    loss = nll / scored_tokens if can_score and scored_tokens else None
    return EvalReport(
        label=system.label,
        examples=len(examples),
        answer_f1=statistics.fmean(f1s) if f1s else 0.0,
        eval_loss=loss,
        perplexity=math.exp(min(loss, 50.0)) if loss is not None else None,
        groundedness=statistics.fmean(grounded) if grounded else None,
        grounded_examples=len(grounded),
        latency_ms_p50=statistics.median(latencies) if latencies else 0.0,
        latency_ms_mean=statistics.fmean(latencies) if latencies else 0.0,
        ms_per_token=generate_ms / generated_tokens if generated_tokens else 0.0,
        outputs=tuple(outputs),
    )


@dataclass(frozen=True)
class SideBySide:
    a: EvalReport
    b: EvalReport

    def rows(self) -> list[tuple[str, float | None, float | None, float | None]]:
        """(metric, a, b, b - a) for every metric either side has."""
        names = sorted(set(self.a.metrics()) | set(self.b.metrics()))
        out = []
        for name in names:
            va, vb = self.a.metric(name), self.b.metric(name)
            out.append((name, va, vb, None if va is None or vb is None else vb - va))
        return out

    def table(self) -> str:
        lines = [f"{'metric':20s} {self.a.label:>14s} {self.b.label:>14s} {'delta':>10s}"]
        for name, va, vb, delta in self.rows():
            cells = [f"{v:14.4f}" if v is not None else f"{'-':>14s}" for v in (va, vb)]
            lines.append(
                f"{name:20s} {cells[0]} {cells[1]} " + (f"{delta:+10.4f}" if delta is not None else "")
            )
        return "\n".join(lines)


def compare(a: System, b: System, examples: Sequence[Example], *, max_new_tokens: int = 48) -> SideBySide:
    return SideBySide(
        evaluate(a, examples, max_new_tokens=max_new_tokens),
        evaluate(b, examples, max_new_tokens=max_new_tokens),
    )


def template_system(label: str, model: CompletionModel, template: object) -> System:
    """A system that prompts `model` with a generator prompt template (anything with
    ``render(context, question)``, e.g. `services.generator.prompts.PromptTemplate`), passages as
    numbered ``[n]`` lines, as the generator packs them."""
    render_template = getattr(template, "render")  # noqa: B009 - any object with a render method

    def render(example: Example) -> str:
        context = "\n".join(f"[{i}] {text}" for i, text in enumerate(example.context, start=1))
        return str(render_template(context, example.question))

    return System(label, model, render)


def compare_templates(
    model: CompletionModel,
    template_a: object,
    template_b: object,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 48,
) -> SideBySide:
    """One model, two prompt-template versions, the same eval set: reported side by side."""

    def label(template: object) -> str:
        return f"{getattr(template, 'id', 'template')}@{getattr(template, 'version', '?')}"

    return compare(
        template_system(label(template_a), model, template_a),
        template_system(label(template_b), model, template_b),
        examples,
        max_new_tokens=max_new_tokens,
    )


LEVER_METRICS = ("answer_f1", "eval_loss", "groundedness", "ms_per_token")


def lever_key(label: str) -> str:
    """A label as a metric-name part: ``current+grounded_qa@2`` -> ``current_grounded_qa_2``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


@dataclass(frozen=True)
class Levers:
    """Systems evaluated on the same examples, each compared with `baseline` (the current model)."""

    baseline: EvalReport
    others: tuple[EvalReport, ...]

    def rows(self) -> list[tuple[str, dict[str, float | None], dict[str, float | None]]]:
        """(label, metric values, deltas from the baseline) per system, the baseline first."""
        out = []
        for report in (self.baseline, *self.others):
            values = {name: report.metric(name) for name in LEVER_METRICS}
            deltas = {
                name: None if value is None or (base := self.baseline.metric(name)) is None else value - base
                for name, value in values.items()
            }
            out.append((report.label, values, deltas))
        return out

    def table(self) -> str:
        width = max(len(label) for label, _, _ in self.rows())
        lines = [f"{'system':{width}s} " + " ".join(f"{name:>22s}" for name in LEVER_METRICS)]
        for label, values, deltas in self.rows():
            cells = []
            for name in LEVER_METRICS:
                value, delta = values[name], deltas[name]
                cell = "-" if value is None else f"{value:.4f}"
                if delta is not None and label != self.baseline.label:
                    cell += f" ({delta:+.4f})"
                cells.append(f"{cell:>22s}")
            lines.append(f"{label:{width}s} " + " ".join(cells))
        return "\n".join(lines)

    def metrics(self, prefix: str = "lever_") -> dict[str, float]:
        """Flat metrics: ``lever_<system>_<metric>`` and ``lever_<system>_<metric>_delta``."""
        out: dict[str, float] = {}
        for label, values, deltas in self.rows():
            key = f"{prefix}{lever_key(label)}_"
            out.update({f"{key}{name}": v for name, v in values.items() if v is not None})
            if label != self.baseline.label:
                out.update({f"{key}{name}_delta": d for name, d in deltas.items() if d is not None})
        return out


def compare_levers(
    baseline: EvalReport,
    others: Sequence[EvalReport | System],
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 48,
) -> Levers:
    """`baseline` (already evaluated on `examples`) beside `others`: reports already made on the same
    examples are taken as they are, systems are evaluated now."""
    reports = tuple(
        other if isinstance(other, EvalReport) else evaluate(other, examples, max_new_tokens=max_new_tokens)
        for other in others
    )
    return Levers(baseline, reports)


# --- the gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateConfig:
    primary: Metric = "eval_loss"
    margin: float = 0.02  # absolute: nats per token for eval_loss, F1 points (0-1) for answer_f1
    regression_tolerance: float = 0.05
    f1_tolerance: float = 0.02
    groundedness_tolerance: float = 0.05
    max_latency_ratio: float = 2.0
    min_eval_examples: int = 1

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError("the gate margin must be >= 0: a worse candidate is never promoted")
        if self.primary not in ("eval_loss", "answer_f1"):
            raise ValueError(f"unknown primary metric {self.primary!r}")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    improvement: float | None  # how much better the candidate is on the primary metric (> 0: better)

    def metrics(self) -> dict[str, float]:
        out = {"gate_promote": 1.0 if self.promote else 0.0}
        if self.improvement is not None:
            out["gate_improvement"] = self.improvement
        return out


def improvement(metric: str, candidate: EvalReport, current: EvalReport) -> float | None:
    """How much better the candidate is (positive: better), whatever the metric's direction."""
    c, r = candidate.metric(metric), current.metric(metric)
    if c is None or r is None or not (math.isfinite(c) and math.isfinite(r)):
        return None
    return r - c if LOWER_IS_BETTER.get(metric, False) else c - r


def gate(
    config: GateConfig,
    *,
    candidate: EvalReport,
    current: EvalReport,
    candidate_regression: EvalReport | None = None,
    current_regression: EvalReport | None = None,
) -> GateDecision:
    reasons: list[str] = []
    if candidate.examples < config.min_eval_examples or current.examples < config.min_eval_examples:
        return GateDecision(False, (f"fewer than {config.min_eval_examples} held-out examples",), None)
    gain = improvement(config.primary, candidate, current)
    if gain is None:
        return GateDecision(False, (f"{config.primary} is unknown for candidate or current",), None)
    if gain < config.margin or gain <= 0:
        reasons.append(f"{config.primary} improves by {gain:+.4f}, less than the margin {config.margin:.4f}")
    if candidate_regression is not None and current_regression is not None:
        regression_gain = improvement(config.primary, candidate_regression, current_regression)
        if regression_gain is not None and regression_gain < -config.regression_tolerance:
            reasons.append(f"regression set {config.primary} worse by {-regression_gain:.4f}")
    f1_gain = improvement("answer_f1", candidate, current)
    if f1_gain is not None and f1_gain < -config.f1_tolerance:
        reasons.append(f"answer_f1 worse by {-f1_gain:.4f}")
    grounded_gain = improvement("groundedness", candidate, current)
    if grounded_gain is not None and grounded_gain < -config.groundedness_tolerance:
        reasons.append(f"groundedness worse by {-grounded_gain:.4f}")
    if current.ms_per_token > 0 and candidate.ms_per_token > config.max_latency_ratio * current.ms_per_token:
        reasons.append(
            f"latency {candidate.ms_per_token:.2f} ms/token is over {config.max_latency_ratio}x "
            f"current's {current.ms_per_token:.2f} ms/token"
        )
    if reasons:
        return GateDecision(False, tuple(reasons), gain)
    return GateDecision(
        True, (f"{config.primary} improves by {gain:+.4f} (margin {config.margin:.4f})",), gain
    )


def side_by_side_metrics(pairs: Mapping[str, SideBySide]) -> dict[str, float]:
    """Flat metrics for events: ``<set>_<a label>_<metric>`` for both sides, e.g.
    ``heldout_candidate_eval_loss`` and ``heldout_current_eval_loss``."""
    out: dict[str, float] = {}
    for name, pair in pairs.items():
        out.update(pair.a.metrics(f"{name}_{pair.a.label}_"))
        out.update(pair.b.metrics(f"{name}_{pair.b.label}_"))
    return out
