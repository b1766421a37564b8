"""Two stored evaluations of one task, paired on the examples both scored: both scores with CIs,
the paired delta (B − A) with its CI and p-value (exact McNemar for accuracy, paired bootstrap for
other metrics, CR1-clustered where the task declares clusters), the smallest delta the pair could
detect, a TOST equivalence p-value, and the p-values adjusted over the family of pairs.
`bench compare` (harness/commands/compare.py) finds the stages; harness/report/compare_table.py
renders the results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from harness.compare.clustering import clustered_ci, declared_column, paired_delta, stored_keys
from harness.compare.equivalence import tost, tost_paired, verdict
from harness.compare.paired import PER_EXAMPLE, format_ci, format_p
from harness.compare.power import mde_accuracy, mde_mean, observed_discordance
from harness.compare.stats import (BOOTSTRAP_RESAMPLES, adjust_p, bootstrap_ci, clustered_paired_difference,
                                   label_probabilities, mcnemar_exact, paired_bootstrap, wilson_interval)
from harness.errors import BenchError
from harness.metrics.classification import correct_mask


@dataclass(frozen=True)
class Side:
    """One stored stage: what the table calls it, where it is, and what it scored."""

    name: str
    run_id: str
    stage: str
    task: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: tuple[Any, ...]


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    task: str
    metric: str  # what is compared per item: accuracy, rougeL, nll (perplexity's per-item value), ...
    n: int
    n_a: int
    n_b: int
    score_a: float
    ci_a: tuple[float, float]
    score_b: float
    ci_b: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    test: str  # "McNemar b=3 c=9" or "paired bootstrap"
    p_value: float
    mde: float
    mde_basis: str  # what the MDE assumed: the discordance or the SD of the differences
    tost_p: float = math.nan
    p_adjusted: float = math.nan
    verdict: str = ""
    gold_probability: str = ""  # the secondary test on the probability of the gold label, in words
    naive_delta_ci: tuple[float, float] = (math.nan, math.nan)  # the CI if items were independent
    clusters: int = 0  # clusters behind the CIs and test (0: not clustered)
    clustering: str = ""  # how the errors treat clustered items, in words ("" when the task declares none)


def paired_items(a: Side, b: Side) -> tuple[list[Any], list[Any]]:
    """The predictions of the examples both sides scored, in A's order; the same task and the same
    gold label per example, or an error."""
    if a.task != b.task:
        raise BenchError(f"{a.name} is task {a.task} and {b.name} is task {b.task}: only evaluations of one task "
                         "can be paired")
    by_id = {p.example_id: p for p in b.predictions}
    left = [p for p in a.predictions if p.example_id in by_id]
    right = [by_id[p.example_id] for p in left]
    if not left:
        raise BenchError(f"{a.name} and {b.name} share no evaluated examples (different --eval-samples or --seed?); "
                         "evaluate both on the same examples")
    wrong = [x.example_id for x, y in zip(left, right) if x.gold != y.gold]
    if wrong:
        raise BenchError(f"{a.name} and {b.name} disagree on the gold label of {len(wrong)} shared examples (e.g. "
                         f"{wrong[0]}): they were scored against different labels (another --labels?)")
    return left, right


def compare_pair(a: Side, b: Side, margin: float | None) -> PairResult:
    left, right = paired_items(a, b)
    headline = a.metrics.get("headline", "accuracy")
    if headline != b.metrics.get("headline", "accuracy"):
        raise BenchError(f"{a.name} is scored by {headline} and {b.name} by {b.metrics.get('headline')}")
    seed = int(a.config.get("seed", 0))
    keys, column = stored_keys(left, right), declared_column(a.config)
    common = dict(a=a.name, b=b.name, task=a.task, n=len(left), n_a=len(a.predictions), n_b=len(b.predictions))
    if headline == "accuracy":
        result, x, y, delta, flips = _accuracy_pair(left, right, keys, column, seed, common)
    else:
        result, x, y, delta = _mean_pair(headline, left, right, keys, column, seed, common)
        flips = None
    result = replace(result, naive_delta_ci=delta.naive_ci, clusters=delta.clusters, clustering=delta.note)
    if delta.clustered:  # both scores' own CIs clustered as well: each is a per-item mean
        result = replace(result, ci_a=clustered_ci(x, keys, result.score_a) or result.ci_a,
                         ci_b=clustered_ci(y, keys, result.score_b) or result.ci_b)
    if margin is not None and len(left) > 1:
        result = replace(result, tost_p=_equivalence_p(x, y, keys, margin, delta.clustered, flips))
    return result


def _accuracy_pair(left: list[Any], right: list[Any], keys: Any, column: Any, seed: int,
                   common: dict[str, Any]) -> tuple[PairResult, list[float], list[float], Any, int]:
    """Accuracy compared by exact McNemar; also returns the per-item values, the delta and the
    number of discordant items."""
    n = len(left)
    gold = [p.gold for p in left]
    x = [float(v) for v in correct_mask(gold, [p.label for p in left])]
    y = [float(v) for v in correct_mask(gold, [p.label for p in right])]
    test = mcnemar_exact([v > 0 for v in x], [v > 0 for v in y])
    boot = paired_bootstrap(x, y, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    # clustered: the CR1 test of the paired differences replaces McNemar, which assumes independent items
    delta = paired_delta(x, y, keys, column, boot, naive_p=test.p_value)
    psi = observed_discordance(test.b, test.c, n)
    result = PairResult(metric="accuracy", score_a=sum(x) / n, ci_a=wilson_interval(int(sum(x)), n),
                        score_b=sum(y) / n, ci_b=wilson_interval(int(sum(y)), n), delta=delta.delta,
                        delta_ci=delta.ci, test=("CR1 clustered, " if delta.clustered else "")
                        + f"McNemar b={test.b} c={test.c}",
                        p_value=delta.p_value, mde=mde_accuracy(n, psi) if n > 1 else math.nan,
                        mde_basis=f"discordance {psi:.3f}", gold_probability=gold_probability_test(left, right, seed),
                        **common)
    return result, x, y, delta, test.b + test.c


def _mean_pair(headline: str, left: list[Any], right: list[Any], keys: Any, column: Any, seed: int,
               common: dict[str, Any]) -> tuple[PairResult, list[float], list[float], Any]:
    """Any other metric compared by its per-item mean and a paired bootstrap."""
    n = len(left)
    key = PER_EXAMPLE.get(headline, headline)
    x = [float((p.values or {}).get(key, 0.0)) for p in left]
    y = [float((p.values or {}).get(key, 0.0)) for p in right]
    boot = paired_bootstrap(x, y, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    delta = paired_delta(x, y, keys, column, boot, seed=seed)
    sd = _sd([v - u for u, v in zip(x, y)])
    result = PairResult(metric=key, score_a=sum(x) / n, ci_a=bootstrap_ci(x, resamples=BOOTSTRAP_RESAMPLES,
                                                                          seed=seed),
                        score_b=sum(y) / n, ci_b=bootstrap_ci(y, resamples=BOOTSTRAP_RESAMPLES, seed=seed),
                        delta=delta.delta, delta_ci=delta.ci,
                        test="CR1 clustered" if delta.clustered else "paired bootstrap",
                        p_value=delta.p_value, mde=mde_mean(n, sd) if n > 1 else math.nan,
                        mde_basis=f"SD of the differences {sd:.3g}", **common)
    return result, x, y, delta


def _equivalence_p(x: list[float], y: list[float], keys: Any, margin: float, clustered: bool,
                   flips: int | None) -> float:
    """The TOST p-value of |B - A| < margin; `flips` is the number of discordant items (accuracy)."""
    n = len(x)
    tested = tost_paired(x, y, margin)
    if clustered:  # items share clusters: the CR1 SE of the differences, t with G - 1 df
        difference, _ = clustered_paired_difference(x, y, keys)  # type: ignore[arg-type]
        tested = tost(difference.mean, difference.se_cluster, margin, df=difference.clusters - 1)
    elif flips == 0:
        # No item flipped: the t test's SE is 0 and would call any n "equivalent". Count one
        # discordant item instead (SE 1/n), as the MDE does: n 30 stays inconclusive, n 2000 not.
        tested = tost(tested.delta, 1.0 / n, margin, df=n - 1)
    return tested.p_value


def gold_probability_test(left: Sequence[Any], right: Sequence[Any], seed: int) -> str:
    """A secondary, lower-variance paired test: the probability each side gave the gold label
    (prompt log-likelihoods normalised over the labels, or a head's probabilities), which moves
    on every example, where correctness moves only on the few that flip. Empty when the stored
    predictions keep no per-label scores."""
    pairs = [(x, y) for x, y in zip(left, right) if len(x.scores) > x.gold >= 0 and len(y.scores) > y.gold >= 0
             and len(x.scores) >= 2 and len(y.scores) >= 2]
    if len(pairs) < 2:
        return ""
    before = [label_probabilities(x.scores)[x.gold] for x, _ in pairs]
    after = [label_probabilities(y.scores)[y.gold] for _, y in pairs]
    boot = paired_bootstrap(before, after, resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return (f"gold-label probability (secondary paired test, lower variance than accuracy; n {len(pairs)}): "
            f"{sum(before) / len(pairs):.3f} → {sum(after) / len(pairs):.3f}, Δ "
            f"{format_ci(boot.delta, (boot.ci_low, boot.ci_high), signed=True)}, paired bootstrap p "
            f"{format_p(boot.p_value)}")


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def adjusted(results: Sequence[PairResult], method: str, margin: float | None) -> list[PairResult]:
    """Each pair's p-value adjusted over the family (all pairs of this command), and the verdict
    read from the adjusted difference p-value."""
    adjusted_p = adjust_p([r.p_value for r in results], method)
    tost_p = adjust_p([r.tost_p for r in results], method)
    out = []
    for result, p, t in zip(results, adjusted_p, tost_p):
        words = verdict(t, p, margin, show=format_p) if margin is not None and not math.isnan(t) else ""
        out.append(replace(result, p_adjusted=p, tost_p=t, verdict=words))
    return out
