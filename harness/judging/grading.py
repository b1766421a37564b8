"""From stored outputs to judge questions, and from answers to per-run numbers.

Single-answer grading asks for a 0-100 score of each stage's output against the reference.
Pairwise grading shows the baseline and the fine-tuned output side by side, in both orders; a
verdict that changes with the order is position bias, so it counts as a tie and as a flip.
With `samples` > 1 every question is asked that many times (sampled): an item's score is the
mean of its valid samples, and the spread across samples is reported next to the mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from harness.compare.stats import BOOTSTRAP_RESAMPLES, bootstrap_ci, paired_bootstrap
from harness.judging.cache import cache_key
from harness.judging.engine import Answer, Query
from harness.judging.parse import parse_score, parse_verdict
from harness.judging.reliability import measure
from harness.judging.templates import SCORE_FORMAT, VERDICT_FORMAT, Template

BEFORE_FIRST, AFTER_FIRST = "before-first", "after-first"


@dataclass(frozen=True)
class Item:
    example_id: str
    prompt: str
    reference: str
    before: str | None  # None: the model produced no output (a failure) - judged as missing
    after: str | None


@dataclass(frozen=True)
class Slot:
    """Where an answer belongs: ("single", "before"|"after", item, sample) or
    ("pairwise", BEFORE_FIRST|AFTER_FIRST, item, sample)."""

    kind: str
    side: str
    item: int
    sample: int


def plan_queries(judge_id: str, single: Template | None, pairwise: Template | None, items: Sequence[Item],
                 samples: int) -> list[tuple[Slot, Query]]:
    planned: list[tuple[Slot, Query]] = []

    def add(slot: Slot, template: Template, prompt: str, pairwise_answer: bool) -> None:
        key = cache_key(judge_id, template.version, prompt, slot.sample)
        answer, parse = (VERDICT_FORMAT, parse_verdict) if pairwise_answer else (SCORE_FORMAT, parse_score)
        planned.append((slot, Query(key, template.version, prompt, slot.sample, answer, parse)))

    for index, item in enumerate(items):
        for sample in range(samples):
            for side, response in (("before", item.before), ("after", item.after)):
                if single is not None and response is not None:
                    add(Slot("single", side, index, sample), single,
                        single.render(prompt=item.prompt, reference=item.reference, response=response), False)
            if pairwise is not None and item.before is not None and item.after is not None:
                for side, (a, b) in ((BEFORE_FIRST, (item.before, item.after)), (AFTER_FIRST, (item.after, item.before))):
                    add(Slot("pairwise", side, index, sample), pairwise,
                        pairwise.render(prompt=item.prompt, reference=item.reference, response_a=a, response_b=b), True)
    return planned


def summarize(items: Sequence[Item], samples: int, slots: Sequence[Slot], answers: Sequence[Answer],
              seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, one record per item). Missing answers are left out of every mean, and counted."""
    table: dict[tuple[str, str, int, int], Answer] = {(s.kind, s.side, s.item, s.sample): a
                                                       for s, a in zip(slots, answers)}
    metrics: dict[str, Any] = {"samples": samples, "n": len(items)}
    item_means: dict[str, list[float | None]] = {}
    for side in ("before", "after"):
        found = [[table.get(("single", side, i, s)) for s in range(samples)] for i in range(len(items))]
        per_item = [[a.value for a in row if a is not None and a.value is not None] for row in found]
        item_means[side] = [float(np.mean(v)) if v else None for v in per_item]
        metrics[f"score_{side}"] = _score_summary(per_item, samples, seed)
    both = [(b, a) for b, a in zip(item_means["before"], item_means["after"]) if b is not None and a is not None]
    if both:
        boot = paired_bootstrap([b for b, _ in both], [a for _, a in both], resamples=BOOTSTRAP_RESAMPLES, seed=seed)
        metrics["score_delta"] = {"value": boot.delta, "ci": [boot.ci_low, boot.ci_high], "p": boot.p_value,
                                  "n": len(both)}
    pairwise = _pairwise(items, samples, table, seed)
    if pairwise:
        metrics["pairwise"] = pairwise
    metrics["reliability"] = measure(table, samples)  # can this judge judge: see harness.judging.reliability
    replies = sum(len(a.raw) for a in answers)
    metrics["replies"] = replies
    metrics["parse_failure_rate"] = sum(a.unparsed for a in answers) / replies if replies else math.nan
    metrics["missing_answers"] = sum(a.value is None for a in answers)
    metrics["calls"] = sum(a.calls for a in answers)
    metrics["cache_hits"] = sum(a.cache_hits for a in answers)
    metrics["input_tokens"] = sum(a.input_tokens for a in answers)
    metrics["output_tokens"] = sum(a.output_tokens for a in answers)
    by_item: dict[int, list[tuple[tuple[str, str, int, int], Answer]]] = {}
    for key, answer in sorted(table.items()):
        by_item.setdefault(key[2], []).append((key, answer))
    records = [_item_record(item, by_item.get(i, [])) for i, item in enumerate(items)]
    return metrics, records


def _score_summary(per_item: Sequence[Sequence[float]], samples: int, seed: int) -> dict[str, Any]:
    means = [float(np.mean(v)) for v in per_item if v]
    summary: dict[str, Any] = {"n_scored": len(means), "missing": len(per_item) - len(means)}
    if not means:
        return {**summary, "value": math.nan, "ci": [math.nan, math.nan]}
    summary["value"] = float(np.mean(means))
    summary["ci"] = list(bootstrap_ci(means, resamples=BOOTSTRAP_RESAMPLES, seed=seed))
    summary["sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    repeated = [v for v in per_item if len(v) > 1]
    if repeated:  # how much the judge disagrees with itself on the same item
        summary["item_sd"] = float(np.mean([np.std(v, ddof=1) for v in repeated]))
        summary["item_range_max"] = float(max(max(v) - min(v) for v in repeated))
    if samples > 1:
        by_sample = [[v[s] for v in per_item if len(v) == samples] for s in range(samples)]
        sample_means = [float(np.mean(v)) for v in by_sample if v]
        if len(sample_means) > 1:
            summary["sample_mean_sd"] = float(np.std(sample_means, ddof=1))
    return summary


OUTCOME_OF = {BEFORE_FIRST: {"A": "before", "B": "after", "tie": "tie"},
              AFTER_FIRST: {"A": "after", "B": "before", "tie": "tie"}}
POINTS = {"after": 1.0, "tie": 0.5, "before": 0.0}


def _pair_outcome(table: dict[tuple[str, str, int, int], Answer], item: int, sample: int) -> tuple[str, bool] | None:
    """(outcome, flipped) of one sample of one item, or None if either order's verdict is missing."""
    first = table.get(("pairwise", BEFORE_FIRST, item, sample))
    second = table.get(("pairwise", AFTER_FIRST, item, sample))
    if first is None or second is None or first.value is None or second.value is None:
        return None
    one, two = OUTCOME_OF[BEFORE_FIRST][first.value], OUTCOME_OF[AFTER_FIRST][second.value]
    return (one, False) if one == two else ("tie", True)


def _pairwise(items: Sequence[Item], samples: int, table: dict[tuple[str, str, int, int], Answer],
              seed: int) -> dict[str, Any] | None:
    if not any(key[0] == "pairwise" for key in table):
        return None
    points, flips, pairs = [], 0, 0
    wins = ties = losses = 0
    for i in range(len(items)):
        outcomes = [o for o in (_pair_outcome(table, i, s) for s in range(samples)) if o is not None]
        pairs += len(outcomes)
        flips += sum(flipped for _, flipped in outcomes)
        if not outcomes:
            continue
        score = float(np.mean([POINTS[outcome] for outcome, _ in outcomes]))
        points.append(score)
        wins, ties, losses = wins + (score > 0.5), ties + (score == 0.5), losses + (score < 0.5)
    result: dict[str, Any] = {"n_judged": len(points), "missing": len(items) - len(points), "wins": wins,
                              "ties": ties, "losses": losses, "flip_rate": flips / pairs if pairs else math.nan}
    if points:
        result["win_rate"] = float(np.mean(points))  # fine-tuned vs baseline; a tie counts one half
        result["ci"] = list(bootstrap_ci(points, resamples=BOOTSTRAP_RESAMPLES, seed=seed))
    else:
        result["win_rate"], result["ci"] = math.nan, [math.nan, math.nan]
    return result


def _item_record(item: Item, answers: Sequence[tuple[tuple[str, str, int, int], Answer]]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": item.example_id}
    for (kind, side, _, sample), answer in answers:
        entry = {"sample": sample, "value": answer.value}
        if answer.value is None:  # missing: keep what the judge said, and why it did not count
            entry.update(error=answer.error, raw=[text[:2000] for text in answer.raw])
        record.setdefault(f"{kind}:{side}", []).append(entry)
    return record
