"""Predictions + the examples they answer -> a stage's metrics, and each prediction's own metric
values (what paired before/after statistics resample). One function per task kind; `bench
rescore` calls the same function on stored outputs, so a metric fix never needs the model again.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

from harness.task.spec import Classify, Generate, LanguageModel, TaskSpec
from harness.types import Example, Prediction


def score_stage(spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Prediction],
                seed: int) -> tuple[dict[str, Any], list[Prediction]]:
    """The stage's metrics, and its predictions with their metric values and their examples'
    cluster keys (when the task declares a cluster column), ready to store."""
    by_id = {e.id: e for e in examples}
    matched = [by_id[p.example_id] for p in predictions]
    metrics, scored = _score(spec, matched, predictions, seed)
    return metrics, [replace(p, cluster=e.cluster or None) for p, e in zip(scored, matched)]


def _score(spec: TaskSpec, matched: Sequence[Example], predictions: Sequence[Prediction],
           seed: int) -> tuple[dict[str, Any], list[Prediction]]:
    kind = spec.kind
    if isinstance(kind, Classify):
        from harness.metrics.classification import classification_report

        report = classification_report([p.gold for p in predictions], [p.label for p in predictions], kind.labels,
                                       seed=seed)
        return {**report, **_class_context(kind, predictions)}, list(predictions)
    if isinstance(kind, LanguageModel):
        return _language_model(kind, matched, predictions, seed)
    if kind.squad_scored:
        return _squad(kind, matched, predictions, seed)
    return _text(matched, predictions, seed)


# Below this many examples a single answer for all is not remarkable.
MIN_FOR_WARNINGS = 10


def _same_answer_warnings(answers: Sequence[str | None], report: dict[str, Any], *, squad: bool = False
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


def _class_context(kind: Classify, predictions: Sequence[Prediction]) -> dict[str, Any]:
    """What an accuracy is worth: the score of always answering the most frequent eval class, and
    a warning when every answer is one class (the score is then that class's share)."""
    golds = [p.gold for p in predictions]
    top = max(range(len(kind.labels)), key=golds.count)
    context: dict[str, Any] = {"majority": {"label": kind.labels[top], "accuracy": golds.count(top) / len(golds)}}
    answered = {p.label for p in predictions if p.label is not None}
    if len(predictions) >= MIN_FOR_WARNINGS and len(answered) == 1:
        (label,) = answered
        context["warnings"] = [f"every answer is {kind.labels[label]!r}: its accuracy is that class's share of "
                               "the eval set"]
    return context


def _with_values(predictions: Sequence[Prediction], per_example: dict[str, list[float]]) -> list[Prediction]:
    names = list(per_example)
    return [replace(p, values={name: round(float(per_example[name][i]), 6) for name in names})
            for i, p in enumerate(predictions)]


def _text(examples: Sequence[Example], predictions: Sequence[Prediction], seed: int
          ) -> tuple[dict[str, Any], list[Prediction]]:
    from harness.metrics.text import text_report

    report = text_report([p.output for p in predictions], [list(e.references) for e in examples], seed=seed)
    per_example = report.pop("per_example")
    if predictions and all(len(p.scores) == 2 for p in predictions):
        # Reference (response-token) perplexity, token-weighted, as for language modelling.
        totals = [(float(p.scores[0]), int(p.scores[1])) for p in predictions]
        report["perplexity"] = _perplexity_with_ci(totals, seed)[0]
        per_example["nll"] = [nll / tokens if tokens else 0.0 for nll, tokens in totals]
    return _same_answer_warnings([p.output for p in predictions], report), _with_values(predictions, per_example)


def _perplexity_with_ci(totals: Sequence[tuple[float, int]], seed: int
                        ) -> tuple[dict[str, Any], tuple[float, float]]:
    """Token-weighted perplexity with its CI, and the CI of NLL per token it is the exp of (one
    bootstrap: examples resampled, each weighted by its tokens)."""
    from harness.metrics.perplexity import perplexity_from_totals
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


def _squad(kind: Any, examples: Sequence[Example], predictions: Sequence[Prediction], seed: int
           ) -> tuple[dict[str, Any], list[Prediction]]:
    """SQuAD v2 EM/F1 over every question (unanswerable ones included: the right answer is no
    answer), plus ROUGE/BLEU/METEOR of the answers on the answerable questions."""
    from harness.metrics.squad_v2 import normalize_no_answer, squad_v2_report
    from harness.metrics.text import text_report

    generative = isinstance(kind, Generate)
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
    return _same_answer_warnings(answers, report, squad=True), _with_values(predictions, per_example)


def _language_model(kind: LanguageModel, examples: Sequence[Example], predictions: Sequence[Prediction], seed: int
                    ) -> tuple[dict[str, Any], list[Prediction]]:
    """Token-weighted perplexity over the documents (the headline), continuation BLEU/ROUGE."""
    from harness.metrics.text import text_report

    totals = [(float(p.scores[0]), int(p.scores[1])) for p in predictions]
    references = [kind.continuation_split(e.texts[0])[1] for e in examples]
    report = text_report([p.output for p in predictions], references, meteor=False, seed=seed)
    per_example = report.pop("per_example")
    nll_per_token = [nll / tokens if tokens else 0.0 for nll, tokens in totals]
    tokens = sum(t for _, t in totals)
    perplexity, nll_ci = _perplexity_with_ci(totals, seed)
    report.update(perplexity=perplexity,
                  nll_per_token={"value": sum(t[0] for t in totals) / max(1, tokens), "ci": list(nll_ci)},
                  tokens_scored=tokens)
    return report, _with_values(predictions, {"nll": nll_per_token, **per_example})
