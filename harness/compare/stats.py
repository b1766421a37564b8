"""Paired statistics for baseline-vs-fine-tuned comparisons (numpy/scipy only, no torch).

Both systems are scored on the same examples, so every test here is paired: that removes
the between-example variance and is what makes small improvements detectable at all.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# Resamples behind every bootstrap CI and p-value in bench's tables (comparisons and judgments): a
# p-value of 0.0 from them means "below 2 / BOOTSTRAP_RESAMPLES", and tables print it that way.
BOOTSTRAP_RESAMPLES = 2000

# Cap on elements in one resampled index block: int64 indices plus two gathered float64
# arrays cost 24 bytes an element, so 2**21 elements keeps a chunk near 50 MB.
_CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the exact two-sided p-value."""

    b: int  # baseline right, fine-tuned wrong
    c: int  # baseline wrong, fine-tuned right
    p_value: float


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Observed delta (after - before), its percentile CI and the bootstrap p-value."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int


def mcnemar_exact(
    baseline_correct: Sequence[bool], finetuned_correct: Sequence[bool]
) -> McNemarResult:
    """Exact (binomial) McNemar test: only the discordant pairs carry information.

    Exact rather than chi-squared because b + c is often small for a handful of flips.
    """
    base = np.asarray(baseline_correct, dtype=bool)
    tuned = np.asarray(finetuned_correct, dtype=bool)
    if base.ndim != 1 or base.shape != tuned.shape:
        raise ValueError(
            "mcnemar_exact needs two 1-D sequences of equal length, "
            f"got {base.shape} and {tuned.shape}"
        )
    if base.size == 0:
        raise ValueError("mcnemar_exact needs at least one example")
    b = int(np.count_nonzero(base & ~tuned))
    c = int(np.count_nonzero(~base & tuned))
    if b + c == 0:
        return McNemarResult(b=b, c=c, p_value=1.0)
    from scipy.stats import binom

    p = min(1.0, 2.0 * float(binom.cdf(min(b, c), b + c, 0.5)))
    return McNemarResult(b=b, c=c, p_value=p)


def iter_bootstrap_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (rows, n) int64 blocks of resampled example indices, `resamples` rows in all.

    Chunked so that 10k resamples of 25k examples never materialise at once; the
    chunk size depends only on n, so a given (n, resamples, seed) always gives the same rows.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one example")
    if resamples < 0:
        raise ValueError(f"resamples must be >= 0, got {resamples}")
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, _CHUNK_ELEMENTS // n)
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        yield rng.integers(0, n, size=(take, n), dtype=np.int64)
        done += take


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile CI of bootstrap samples (the simple, assumption-light choice)."""
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    lo, hi = np.percentile(samples, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    *,
    statistic: Callable[..., np.ndarray] = np.mean,
    weights: Sequence[float] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedBootstrapResult:
    """Paired bootstrap of statistic(after) - statistic(before) over resampled examples.

    The same indices are drawn for both systems, which keeps the pairing. `statistic` is
    called on 2-D arrays (resamples, examples) as `statistic(x, axis=1)` and must return one
    value per row, so custom statistics must accept `axis=` (np.mean, np.median do).
    `weights` (one per example, drawn with it) makes the statistic the weighted mean instead,
    e.g. NLL per token over documents weighted by their token counts: a ratio of totals, which
    an unweighted mean of per-document values would not match.

    p-value (Koehn 2004 style): twice the fraction of resampled deltas that do not share the
    observed delta's sign, capped at 1; 1.0 when the observed delta is 0. With R resamples
    it can be 0.0, which means "below about 2/R", not "impossible".
    """
    x = _as_scores(before, "before")
    y = _as_scores(after, "after")
    if x.shape != y.shape:
        raise ValueError(f"before and after must have equal length, got {x.size} and {y.size}")
    if resamples < 1:
        raise ValueError(f"paired_bootstrap needs resamples >= 1, got {resamples}")
    _check_confidence(confidence)
    rows = _row_statistic(statistic, weights, x.size)

    everything = np.arange(x.size)[None, :]
    delta = float(rows(y, everything)[0] - rows(x, everything)[0])
    deltas = np.concatenate(
        [rows(y, idx) - rows(x, idx) for idx in iter_bootstrap_indices(x.size, resamples, seed)]
    )
    return _bootstrap_result(delta, deltas, confidence, resamples)


def _bootstrap_result(delta: float, deltas: np.ndarray, confidence: float, resamples: int) -> PairedBootstrapResult:
    """The percentile CI of resampled deltas and the two-sided sign p-value of the observed one."""
    deltas = deltas[~np.isnan(deltas)]
    lo, hi = percentile_interval(deltas, confidence)
    if delta > 0:
        p = min(1.0, 2.0 * float(np.mean(deltas <= 0)))
    elif delta < 0:
        p = min(1.0, 2.0 * float(np.mean(deltas >= 0)))
    else:
        p = 1.0
    return PairedBootstrapResult(delta=delta, ci_low=lo, ci_high=hi, p_value=p, resamples=resamples)


def _row_statistic(
    statistic: Callable[..., np.ndarray], weights: Sequence[float] | None, n: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(values, index rows) -> the statistic of each row of resampled values."""
    if weights is None:
        return lambda v, idx: np.asarray(statistic(v[idx], axis=1), dtype=float)
    w = _as_scores(weights, "weights")
    if w.size != n or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {n} non-negative values with a positive sum")
    # a resample that drew only zero-weight examples has no mean: nan, left out of percentiles
    return lambda v, idx: (v[idx] * w[idx]).sum(axis=1) / np.where(w[idx].sum(axis=1) > 0, w[idx].sum(axis=1), np.nan)


def bootstrap_ci(
    values: Sequence[float],
    *,
    weights: Sequence[float] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (the weighted mean, with `weights`); (mean, mean)
    when resamples == 0."""
    v = _as_scores(values, "values")
    _check_confidence(confidence)
    rows = _row_statistic(np.mean, weights, v.size)
    if resamples == 0:
        m = float(rows(v, np.arange(v.size)[None, :])[0])
        return m, m
    means = np.concatenate([rows(v, idx) for idx in iter_bootstrap_indices(v.size, resamples, seed)])
    return percentile_interval(means[~np.isnan(means)], confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sane at 0%/100% and small n, unlike Wald."""
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    _check_confidence(confidence)
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2.0 * n)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # At 0/n and n/n the exact bound is 0 or 1; pin it so rounding can't leave 0.9999999.
    lo = 0.0 if successes == 0 else max(0.0, float(center - half))
    hi = 1.0 if successes == n else min(1.0, float(center + half))
    return lo, hi


def _as_scores(values: Sequence[float], name: str) -> np.ndarray:
    """1-D finite float array; a NaN score would silently poison every resample."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# ---------------------------------------------------------------------------------------------
# Many comparisons: family-wise (Holm) and false-discovery-rate (Benjamini-Hochberg) adjustment
# ---------------------------------------------------------------------------------------------

ADJUSTMENTS = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)",
               "none": "none"}


def adjust_p(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values of one family of tests, in the given order (like statsmodels
    `multipletests(method='holm'|'fdr_bh')[1]`).

    holm: step-down Bonferroni (Holm 1979), controls the chance of any false positive in the
    family; bh: step-up (Benjamini & Hochberg 1995), controls the expected share of false
    positives among the rejections; none: the p-values unchanged. NaN p-values (a row with no
    test) stay NaN and do not count towards the family.
    """
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment {method!r}; use one of {', '.join(ADJUSTMENTS)}")
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    tested = ~np.isnan(p)
    m = int(tested.sum())
    if method == "none" or m == 0:
        return [float(x) for x in out]
    values = p[tested]
    if ((values < 0) | (values > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    if method == "holm":
        stepped = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        stepped = np.minimum.accumulate((m / np.arange(m, 0, -1) * ranked[::-1]))[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, stepped)
    out[tested] = adjusted
    return [float(x) for x in out]


# ---------------------------------------------------------------------------------------------
# Clustered data: items that share a context (SQuAD questions on one paragraph) are not independent
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusteredMean:
    """A mean with its ordinary and its cluster-robust (CR1) standard error and normal 95% CI."""

    mean: float
    se_iid: float
    se_cluster: float
    clusters: int
    ci: tuple[float, float]

    @property
    def widening(self) -> float:
        """How many times wider the clustered interval is than the independent-items one."""
        return self.se_cluster / self.se_iid if self.se_iid > 0 else math.nan


def clustered_mean(values: Sequence[float], clusters: Sequence[str], confidence: float = 0.95) -> ClusteredMean:
    """Mean of `values` with a cluster-robust standard error (CR1; Miller 2024, arXiv 2411.00640,
    Appendix A): the same number as statsmodels OLS on a constant with `cov_type='cluster'`.

    SE² = G/(G-1) · Σ_g (Σ_{i∈g} (x_i − x̄))² / n² over G clusters. It assumes clusters are
    independent of each other (items inside one may be correlated any way) and needs enough of
    them (a few dozen) for the normal interval to be trusted. `se_iid` is the ordinary s/√n.
    """
    x = _as_scores(values, "values")
    groups = np.asarray([str(c) for c in clusters])
    if groups.shape != x.shape:
        raise ValueError(f"clusters must give one cluster per value, got {groups.size} for {x.size}")
    _check_confidence(confidence)
    n = x.size
    mean = float(x.mean())
    _, codes = np.unique(groups, return_inverse=True)
    sums = np.bincount(codes, weights=x - mean)
    g = sums.size
    se_cluster = math.sqrt(g / (g - 1) * float(np.sum(sums ** 2)) / n ** 2) if g > 1 else math.nan
    se_iid = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    return ClusteredMean(mean=mean, se_iid=se_iid, se_cluster=se_cluster, clusters=g,
                         ci=(mean - z * se_cluster, mean + z * se_cluster))


def clustered_paired_difference(before: Sequence[float], after: Sequence[float], clusters: Sequence[str],
                                confidence: float = 0.95) -> tuple[ClusteredMean, float]:
    """Mean of after − before per item with its CR1 standard error and CI, and the two-sided
    normal p-value of "no difference" (Miller 2024, eq. A.3: cluster the paired differences)."""
    x, y = _as_scores(before, "before"), _as_scores(after, "after")
    if x.shape != y.shape:
        raise ValueError(f"before and after must have equal length, got {x.size} and {y.size}")
    result = clustered_mean(y - x, clusters, confidence)
    from scipy.stats import norm

    if result.se_cluster > 0:
        p = float(2.0 * norm.sf(abs(result.mean) / result.se_cluster))
    else:
        p = 1.0 if result.mean == 0 else 0.0
    return result, p


def paired_cluster_bootstrap(before: Sequence[float], after: Sequence[float], clusters: Sequence[str], *,
                             weights: Sequence[float] | None = None, resamples: int = 1000, seed: int = 0,
                             confidence: float = 0.95) -> PairedBootstrapResult:
    """paired_bootstrap over whole clusters: each resample draws G of the G clusters with
    replacement and keeps all their items, both systems alike (the cluster bootstrap), for a
    statistic that is not a per-item mean (a token-weighted NLL: `weights`), where CR1 does not
    apply. The statistic is the (weighted) mean of the drawn items, as in paired_bootstrap."""
    x, y = _as_scores(before, "before"), _as_scores(after, "after")
    if x.shape != y.shape:
        raise ValueError(f"before and after must have equal length, got {x.size} and {y.size}")
    groups = np.asarray([str(c) for c in clusters])
    if groups.shape != x.shape:
        raise ValueError(f"clusters must give one cluster per value, got {groups.size} for {x.size}")
    if resamples < 1:
        raise ValueError(f"paired_cluster_bootstrap needs resamples >= 1, got {resamples}")
    _check_confidence(confidence)
    w = np.ones_like(x) if weights is None else _as_scores(weights, "weights")
    if w.size != x.size or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {x.size} non-negative values with a positive sum")
    _, codes = np.unique(groups, return_inverse=True)
    # a resample's weighted mean is (counts · per-cluster Σw·v) / (counts · per-cluster Σw)
    sum_x, sum_y, sum_w = (np.bincount(codes, weights=v) for v in (w * x, w * y, w))
    g = sum_w.size
    delta = float(sum_y.sum() / sum_w.sum() - sum_x.sum() / sum_w.sum())
    rng = np.random.Generator(np.random.PCG64(seed))
    rows, deltas, done = max(1, _CHUNK_ELEMENTS // g), [], 0
    while done < resamples:
        take = min(rows, resamples - done)
        counts = rng.multinomial(g, np.full(g, 1.0 / g), size=take).astype(float)  # G draws with replacement
        total = counts @ sum_w
        with np.errstate(invalid="ignore", divide="ignore"):  # only zero-weight clusters drawn: nan, left out
            deltas.append(np.where(total > 0, (counts @ sum_y - counts @ sum_x) / total, np.nan))
        done += take
    return _bootstrap_result(delta, np.concatenate(deltas), confidence, resamples)


def label_probabilities(scores: Sequence[float]) -> list[float]:
    """Head scores are already probabilities; prompt log-likelihoods are normalised over the labels."""
    if all(0.0 <= s <= 1.0 for s in scores) and abs(sum(scores) - 1.0) < 1e-3:
        return list(scores)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return [w / sum(weights) for w in weights]


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample sd (n - 1: the spread a new seed would show); one value has no sd."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
