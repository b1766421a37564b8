"""Equivalence testing: is the fine-tuned (or other) system within ±M of the baseline?

A non-significant difference test does not show two systems are the same: at small n it shows
nothing. Two one-sided tests (TOST; Schuirmann 1987) turn the question around: the null is
"the difference is at least M", so a small p-value is evidence that |Δ| < M.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TostResult:
    """Mean paired difference (after − before), the margin, and the TOST p-value: the larger of
    the two one-sided p-values (Δ ≤ −M rejected, Δ ≥ +M rejected)."""

    delta: float
    margin: float
    p_value: float
    p_lower: float  # H0: Δ ≤ −M
    p_upper: float  # H0: Δ ≥ +M
    df: float  # degrees of freedom of the t reference (inf: normal, e.g. clustered errors)


def check_margin(margin: float) -> None:
    if not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"the equivalence margin must be a positive number, got {margin:g}")


def tost(delta: float, se: float, margin: float, df: float = math.inf) -> TostResult:
    """TOST from an estimate and its standard error against Student's t with `df` degrees of
    freedom (normal when df is inf). A zero standard error (every item's difference the same)
    makes both tests exact: p 0 when the difference lies strictly inside the margin, else 1."""
    check_margin(margin)
    from scipy.stats import norm, t

    if not se > 0:
        inside = -margin < delta < margin
        return TostResult(delta, margin, 0.0 if inside else 1.0, 0.0 if delta > -margin else 1.0,
                          0.0 if delta < margin else 1.0, df)
    reference = norm if math.isinf(df) else t(df)
    p_lower = float(reference.sf((delta + margin) / se))
    p_upper = float(reference.cdf((delta - margin) / se))
    return TostResult(delta, margin, max(p_lower, p_upper), p_lower, p_upper, df)


def tost_paired(before: Sequence[float], after: Sequence[float], margin: float) -> TostResult:
    """Paired t-based TOST on the per-item differences after − before (for accuracy the 0/1
    correctness differences, in {−1, 0, 1}); the same numbers as statsmodels
    `ttost_paired(after, before, -margin, margin)`.

    Assumes the items are independent draws and n is large enough for the mean difference to be
    near-normal (the t reference); with 0/1 differences and few discordant items this is rough,
    so trust it from a few dozen discordant pairs on. Items that share a context need
    `tost(delta, clustered_se, margin)` instead.
    """
    x = np.asarray(before, dtype=float)
    y = np.asarray(after, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"tost_paired needs two 1-D sequences of equal length >= 2, got {x.shape} and {y.shape}")
    d = y - x
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return tost(float(d.mean()), se, margin, df=d.size - 1)


def verdict(tost_p: float, difference_p: float, margin: float, alpha: float = 0.05,
            show: Callable[[float], str] | None = None) -> str:
    """The result in words: equivalent when TOST rejects "|Δ| ≥ M", different when the test of
    "no difference" rejects, else inconclusive (neither shown: more examples needed). `show`
    prints a p-value (the table's own format, so the words and the p column agree)."""
    show = show or _p
    if tost_p < alpha:
        return f"equivalent within ±{margin:g} (p={show(tost_p)})"
    if difference_p < alpha:
        return f"different (p={show(difference_p)})"
    return "inconclusive at this n"


def _p(p: float) -> str:
    return "<1e-4" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"
