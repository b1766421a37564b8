"""Scoring pieces several kinds share: the stage-level wrapper the engine calls, per-example
values, the same-answer warning, token-weighted perplexity with its CI, and SQuAD v2 scoring
(extractive spans and generated answers alike)."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

from harness.metrics.perplexity import perplexity_from_totals

if TYPE_CHECKING:
    from harness.task.spec import TaskSpec
    from harness.types import Example, Prediction

# Below this many examples a single answer for all is not remarkable.
MIN_FOR_WARNINGS = 10


def score_stage(spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
                seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
    """The stage's metrics, and its predictions with their metric values and their examples'
    cluster keys (when the task declares a cluster column), ready to store. `bench rescore` calls
    it on stored outputs, so a metric fix never needs the model again."""
    by_id = {e.id: e for e in examples}
    matched = [by_id[p.example_id] for p in predictions]
    metrics, scored = spec.kind.score(spec, matched, predictions, seed)
    return metrics, [replace(p, cluster=e.cluster or None) for p, e in zip(scored, matched)]


def same_answer_warnings(answers: Sequence[str | None], report: dict[str, Any], *, squad: bool = False
                         ) -> dict[str, Any]:
    """A warning when every (non-failed) answer is the same text: the score is then that answer's
    share, not a skill. SQuAD answers come normalised ("Unanswerable." is "", no answer)."""
    given = {answer for answer in answers if answer is not None}
    if len(answers) < MIN_FOR_WARNINGS or len(given) != 1:
        return report
    (only,) = given
    if squad and not only:
        share = report.get("NoAns_total", 0) / max(1, report.get("total", len(answers)))
        warning = f"every answer is 'no answer': its score is the share of unanswerable questions ({share:.2f})"
    else:
        warning = f"every output is the same text ({only[:40]!r})"
    return {**report, "warnings": [warning]}


def with_values(predictions: Sequence["Prediction"], per_example: dict[str, list[float]]) -> list["Prediction"]:
    names = list(per_example)
    return [replace(p, values={name: round(float(per_example[name][i]), 6) for name in names})
            for i, p in enumerate(predictions)]


def perplexity_with_ci(totals: Sequence[tuple[float, int]], seed: int
                       ) -> tuple[dict[str, Any], tuple[float, float]]:
    """Token-weighted perplexity with its CI, and the CI of NLL per token it is the exp of (one
    bootstrap: examples resampled, each weighted by its tokens)."""
    # lazy: keeps numpy out of `bench --help`
    from harness.compare.stats import bootstrap_ci

    value = perplexity_from_totals(totals)  # first: it names the problem when no token was scored
    low, high = bootstrap_ci([nll / tokens if tokens else 0.0 for nll, tokens in totals],
                             weights=[tokens for _, tokens in totals], seed=seed)
    return {"value": value, "ci": [_exp(low), _exp(high)]}, (low, high)


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def squad_scores(examples: Sequence["Example"], predictions: Sequence["Prediction"], seed: int, *,
                 generative: bool) -> tuple[dict[str, Any], list["Prediction"]]:
    """SQuAD v2 EM/F1 over every question (unanswerable ones included: the right answer is no
    answer), plus ROUGE/BLEU/METEOR of the answers on the answerable questions. Generated answers
    are normalised ("Unanswerable." is no answer); span answers carry a no-answer score."""
    # lazy: keeps numpy, nupunkt out of `bench --help`
    from harness.metrics.squad_v2 import normalize_no_answer, squad_v2_report
    from harness.metrics.text import text_report

    # a failure stays None: scored 0 everywhere, never the "no answer" an empty output would be
    answers = [normalize_no_answer(p.output) if generative else p.output for p in predictions]
    # Span heads give a no-answer score (null minus best span logit sum); its logistic is the
    # no-answer probability the best-threshold search sweeps (monotone, so thresholds keep their order).
    na_probs = None if generative else [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, p.scores[0]))))
                                        for p in predictions]
    report = squad_v2_report(answers, [list(e.references) for e in examples], na_probs=na_probs,
                             resamples=1000, seed=seed)
    # Per-example values on the same 0-100 scale as the aggregates, so deltas read in points.
    per_example = {name: [100.0 * v for v in values] for name, values in report.pop("per_example").items()}
    answerable = [i for i, e in enumerate(examples) if e.references]
    if answerable:
        text = text_report([answers[i] for i in answerable], [list(examples[i].references) for i in answerable],
                           seed=seed)
        text.pop("per_example")
        report["answer_text_metrics"] = text
    report["failures"] = sum(p.output is None for p in predictions)
    return same_answer_warnings(answers, report, squad=True), with_values(predictions, per_example)


def text_metric_names(headline: str) -> list[str]:
    """What a fine-tuned text stage records with a value: its headline, then the paired secondaries."""
    # lazy: compare.paired imports this module at its top (a cycle); and keeps numpy, sqlite3 out
    from harness.compare.paired import SECONDARY

    return list(dict.fromkeys([headline, *SECONDARY]))
