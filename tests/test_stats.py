"""Paired statistics against hand-computed and published values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.compare.stats import (
    McNemarResult,
    bootstrap_ci,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)


def _pairs(b: int, c: int, both_right: int = 3, both_wrong: int = 2):
    """Correctness vectors with exactly b (base right, tuned wrong) and c discordant pairs."""
    base = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    tuned = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return base, tuned


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (1, 9, 2 * 11 / 1024),  # 2 * P(X<=1; 10, .5) = 2 * (1 + 10)/1024 = 0.021484375
        (9, 1, 2 * 11 / 1024),  # symmetric
        (0, 6, 2 / 64),  # 2 * P(X=0; 6, .5) = 0.03125
        (2, 8, 2 * 56 / 1024),  # 2 * (1 + 10 + 45)/1024 = 0.109375
        (5, 5, 1.0),  # b == c -> capped at 1
        (0, 0, 1.0),  # no discordant pairs
        # Fagerland, Lydersen & Laake (2013) BMC Med Res Methodol 13:91, airway
        # hyper-responsiveness example: n12=1, n21=7, exact conditional p = 0.070 (= 18/256).
        (1, 7, 18 / 256),
    ],
)
def test_mcnemar_known_values(b, c, expected):
    r = mcnemar_exact(*_pairs(b, c))
    assert (r.b, r.c) == (b, c)
    assert r.p_value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("b, c", [(1, 9), (3, 4), (0, 6), (12, 30), (40, 41), (100, 70)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    r = mcnemar_exact(*_pairs(b, c))
    assert r.p_value == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_result_is_frozen_and_validates():
    r = mcnemar_exact([True, False], [True, True])
    assert r == McNemarResult(b=0, c=1, p_value=1.0)
    with pytest.raises(AttributeError):
        r.b = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError):
        mcnemar_exact([], [])


def test_paired_bootstrap_identical_is_null():
    x = np.random.default_rng(0).random(200)
    r = paired_bootstrap(x, x, resamples=300)
    assert r.delta == 0.0 and r.p_value == 1.0
    assert r.ci_low == 0.0 and r.ci_high == 0.0
    assert r.resamples == 300


def test_paired_bootstrap_strictly_better_is_significant():
    before = np.random.default_rng(1).random(100)
    after = before + 0.05
    r = paired_bootstrap(before, after, resamples=1000)
    assert r.delta == pytest.approx(0.05)
    assert r.p_value < 0.01
    assert r.ci_low > 0


def test_paired_bootstrap_negative_delta_is_symmetric():
    before = np.random.default_rng(2).random(100)
    up = paired_bootstrap(before, before + 0.05, resamples=500, seed=3)
    down = paired_bootstrap(before + 0.05, before, resamples=500, seed=3)
    assert down.delta == pytest.approx(-up.delta)
    assert down.p_value == up.p_value
    assert (down.ci_low, down.ci_high) == pytest.approx((-up.ci_high, -up.ci_low))


def test_paired_bootstrap_noisy_difference_is_not_significant():
    rng = np.random.default_rng(4)
    before = rng.integers(0, 2, 300).astype(float)
    after = before.copy()
    flip = rng.choice(300, 20, replace=False)
    after[flip] = 1 - after[flip]  # ~10 up, ~10 down: no real change
    r = paired_bootstrap(before, after, resamples=1000)
    assert r.p_value > 0.2


def test_paired_bootstrap_deterministic_and_contains_delta():
    rng = np.random.default_rng(5)
    before, after = rng.random(250), rng.random(250) + 0.02
    a = paired_bootstrap(before, after, resamples=400, seed=11)
    b = paired_bootstrap(before, after, resamples=400, seed=11)
    c = paired_bootstrap(before, after, resamples=400, seed=12)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low <= a.delta <= a.ci_high


def test_paired_bootstrap_custom_statistic_and_validation():
    before = np.arange(11, dtype=float)
    r = paired_bootstrap(before, before + 1.0, statistic=np.median, resamples=100)
    assert r.delta == pytest.approx(1.0)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0], resamples=0)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, float("nan")], [1.0, 2.0])


def test_paired_bootstrap_chunking_spans_many_chunks():
    # 25k examples -> chunks of 83 rows; 1000 resamples exercise the chunk boundary.
    rng = np.random.default_rng(6)
    before = rng.integers(0, 2, 25_000).astype(float)
    after = np.where(rng.random(25_000) < 0.1, 1.0, before)
    r = paired_bootstrap(before, after, resamples=1000)
    assert r.resamples == 1000
    assert r.ci_low <= r.delta <= r.ci_high
    assert r.p_value < 0.01


def test_bootstrap_ci_of_mean():
    values = np.random.default_rng(7).normal(10.0, 2.0, 2000)
    lo, hi = bootstrap_ci(values, resamples=1000, seed=0)
    assert lo < values.mean() < hi
    # bootstrap SE ~ 2/sqrt(2000) = 0.0447; the 95% half-width should be ~1.96 * that
    assert (hi - lo) / 2 == pytest.approx(1.96 * 2 / math.sqrt(2000), rel=0.15)
    assert bootstrap_ci(values, resamples=1000, seed=0) == (lo, hi)
    assert bootstrap_ci([3.0, 5.0], resamples=0) == (4.0, 4.0)


def test_weighted_bootstrap_compares_ratios_of_totals():
    """NLL per token over documents is total NLL / total tokens. Before: (2000 nats, 1000 tokens),
    (10, 10) -> 2010/1010 = 1.99010; after: (1800, 1000), (30, 10) -> 1830/1010 = 1.81188; by hand
    the delta is -0.17822 (perplexity 7.316 -> 6.122). The unweighted mean of per-document values
    (2.0, 1.0) -> (1.8, 3.0) would say +0.9: worse."""
    before, after, tokens = [2.0, 1.0], [1.8, 3.0], [1000, 10]
    r = paired_bootstrap(before, after, weights=tokens, resamples=500, seed=0)
    assert r.delta == pytest.approx(1830 / 1010 - 2010 / 1010)
    assert r.delta == pytest.approx(-0.17822, abs=1e-5)
    assert paired_bootstrap(before, after, resamples=500, seed=0).delta == pytest.approx(0.9)
    lo, hi = bootstrap_ci(before, weights=tokens, resamples=500, seed=0)
    assert lo <= 2010 / 1010 <= hi and bootstrap_ci(before, weights=tokens, resamples=0) == pytest.approx(
        (2010 / 1010,) * 2)
    with pytest.raises(ValueError, match="weights"):
        paired_bootstrap(before, after, weights=[1.0], resamples=10)
    with pytest.raises(ValueError, match="weights"):
        bootstrap_ci(before, weights=[0.0, 0.0], resamples=10)


def test_wilson_published_value():
    # Newcombe (1998) example 81/263: Wilson 95% CI 0.2553 to 0.3662.
    # By hand: p = 81/263 = 0.30798, z = 1.959964, z^2/n = 0.014606,
    # center = (p + z^2/2n)/(1 + z^2/n) = 0.315288/1.014606 = 0.310749,
    # half = z/(1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2) = 1.931748 * 0.028710 = 0.055461
    # -> (0.255288, 0.366210)
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5)
    assert hi == pytest.approx(0.3662, abs=5e-5)
    ci = binomtest(81, 263).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_wilson_edges():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0 < hi < 0.35  # 0/10: upper bound ~0.2775, not a zero-width interval
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.65 < lo < 1
    narrow = wilson_interval(50, 100, confidence=0.80)
    wide = wilson_interval(50, 100, confidence=0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_a_bootstrap_p_of_zero_prints_as_the_bound_it_is():
    """No resample crossing zero means p < 2/R (R = 2,000 here), not p < 1e-4; exact McNemar
    p-values can be that small and keep their own format."""
    from harness.compare.paired import format_p
    from harness.compare.stats import BOOTSTRAP_RESAMPLES

    assert BOOTSTRAP_RESAMPLES == 2000 and format_p(0.0) == "<0.001"
    assert format_p(3e-5) == "<1e-4" and format_p(0.0031) == "0.0031" and format_p(0.5) == "0.500"
