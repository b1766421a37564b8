"""bench's equivalence, multiple-comparison, clustered-error and power functions against the
reference implementations (statsmodels, scipy) on fixed data: the same numbers to 1e-6."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.compare.equivalence import tost, tost_paired, verdict
from harness.compare.power import (
    Power,
    mde_accuracy,
    mde_mean,
    observed_discordance,
    paired_t_power,
    required_n_accuracy,
    required_n_mean,
)
from harness.compare.stats import adjust_p, clustered_mean, clustered_paired_difference

statsmodels = pytest.importorskip("statsmodels")


def _scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    before = rng.normal(0.6, 0.2, n)
    return before, before + rng.normal(0.01, 0.05, n)


@pytest.mark.parametrize("margin", [0.005, 0.02, 0.1])
def test_tost_paired_matches_statsmodels_on_metric_differences(margin):
    from statsmodels.stats.weightstats import ttost_paired

    before, after = _scores(3, 150)
    ours = tost_paired(before, after, margin)
    p, lower, upper = ttost_paired(after, before, -margin, margin)
    assert ours.p_value == pytest.approx(p, abs=1e-10)
    assert ours.p_lower == pytest.approx(lower[1], abs=1e-10)
    assert ours.p_upper == pytest.approx(upper[1], abs=1e-10)
    assert ours.df == lower[2]


def test_tost_paired_matches_statsmodels_on_accuracy_flips():
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(7)
    before = (rng.random(400) < 0.8).astype(float)
    after = np.where(rng.random(400) < 0.1, 1 - before, before)
    ours = tost_paired(before, after, 0.03)
    assert ours.p_value == pytest.approx(ttost_paired(after, before, -0.03, 0.03)[0], abs=1e-10)
    assert ours.delta == pytest.approx(after.mean() - before.mean())


def test_tost_with_no_spread_and_bad_margins():
    same = [1.0, 0.0, 1.0, 1.0]
    assert tost_paired(same, same, 0.01).p_value == 0.0  # every difference exactly 0: inside any margin
    assert tost(0.05, 0.0, 0.01).p_value == 1.0
    for margin in (0.0, -0.02, math.nan):
        with pytest.raises(ValueError, match="margin"):
            tost_paired(same, same, margin)


def test_verdict_words():
    assert verdict(0.001, 0.9, 0.02) == "equivalent within ±0.02 (p=0.0010)"
    assert verdict(0.4, 0.003, 0.02) == "different (p=0.0030)"
    assert verdict(0.4, 0.3, 0.02) == "inconclusive at this n"


@pytest.mark.parametrize("method,reference", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjustments_match_multipletests(method, reference):
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.0005, 0.04, 0.9, 0.049]
    assert adjust_p(p, method) == pytest.approx(list(multipletests(p, method=reference)[1]), abs=1e-12)
    assert adjust_p(p, "none") == p


def test_adjustment_leaves_untested_rows_out_of_the_family():
    from statsmodels.stats.multitest import multipletests

    adjusted = adjust_p([0.01, math.nan, 0.03], "holm")
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2]] == pytest.approx(list(multipletests([0.01, 0.03], method="holm")[1]))
    with pytest.raises(ValueError, match="unknown adjustment"):
        adjust_p([0.1], "bonferroni-ish")


def _clusters(seed: int, groups: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, groups)
    effects = rng.normal(0, 0.3, groups)
    values = np.concatenate([effect + rng.normal(0.5, 0.2, size) for effect, size in zip(effects, sizes)])
    labels = [f"ctx{g}" for g, size in enumerate(sizes) for _ in range(size)]
    return values, labels


def test_clustered_mean_matches_statsmodels_cluster_ols():
    import statsmodels.api as sm

    values, labels = _clusters(1, 60)
    codes = np.unique(labels, return_inverse=True)[1]
    fit = sm.OLS(values, np.ones((values.size, 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    ours = clustered_mean(values, labels)
    assert ours.mean == pytest.approx(fit.params[0], abs=1e-12)
    assert ours.se_cluster == pytest.approx(fit.bse[0], rel=1e-9)
    assert list(ours.ci) == pytest.approx(list(fit.conf_int(0.05)[0]), rel=1e-9)
    iid = sm.OLS(values, np.ones((values.size, 1))).fit()
    assert ours.se_iid == pytest.approx(iid.bse[0], rel=1e-9)
    assert ours.clusters == 60 and ours.widening > 1.2  # correlated items: a wider interval


def test_clustered_paired_difference_is_the_clustered_mean_of_differences():
    import statsmodels.api as sm

    after, labels = _clusters(2, 40)
    before = after - np.random.default_rng(5).normal(0.02, 0.1, after.size)
    codes = np.unique(labels, return_inverse=True)[1]
    fit = sm.OLS(after - before, np.ones((after.size, 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    result, p = clustered_paired_difference(before, after, labels)
    assert result.se_cluster == pytest.approx(fit.bse[0], rel=1e-9)
    assert p == pytest.approx(fit.pvalues[0], rel=1e-9)


def test_singleton_clusters_are_the_heteroskedasticity_robust_error():
    import statsmodels.api as sm

    values, _ = _clusters(4, 30)
    fit = sm.OLS(values, np.ones((values.size, 1))).fit(cov_type="HC1")
    assert clustered_mean(values, [str(i) for i in range(values.size)]).se_cluster == pytest.approx(fit.bse[0], rel=1e-9)


@pytest.mark.parametrize("n,sd", [(50, 0.3), (200, 0.5), (1000, 0.12)])
def test_mde_of_a_metric_matches_ttestpower(n, sd):
    from statsmodels.stats.power import TTestPower

    mde = mde_mean(n, sd)
    assert TTestPower().power(mde / sd, n, 0.05) == pytest.approx(0.8, abs=1e-9)
    # statsmodels' own solver stops at about 1e-5 relative; ours is the tighter root of the same equation
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
    assert mde == pytest.approx(effect * sd, rel=1e-4)
    effect = 2.5 / math.sqrt(n)  # power near 70%, where statsmodels gives a number (far tails: nan)
    assert paired_t_power(effect, n) == pytest.approx(TTestPower().power(effect, n, 0.05), abs=1e-10)


@pytest.mark.parametrize("delta,sd", [(0.02, 0.5), (0.05, 0.3), (1.5, 4.0)])
def test_required_n_of_a_metric_matches_ttestpower(delta, sd):
    from statsmodels.stats.power import TTestPower

    n = TTestPower().solve_power(effect_size=delta / sd, nobs=None, alpha=0.05, power=0.8)
    assert required_n_mean(delta, sd) == math.ceil(n)


def _exact_mcnemar_power(n: int, p_b: float, p_c: float, alpha: float = 0.05) -> float:
    """Power of the exact McNemar test, summed over every discordant count and split."""
    from scipy.stats import binom

    power = 0.0
    for discordant in range(1, n + 1):
        ks = np.arange(discordant + 1)
        p_test = np.minimum(1.0, 2 * binom.cdf(np.minimum(ks, discordant - ks), discordant, 0.5))
        reject = ks[p_test < alpha]
        power += binom.pmf(discordant, n, p_b + p_c) * binom.pmf(reject, discordant, p_c / (p_b + p_c)).sum()
    return power


def test_accuracy_power_follows_connor_and_the_exact_mcnemar_power():
    # Connor (1987): n δ² = (z_{.975} √ψ + z_{.8} √(ψ − δ²))²
    za, zb = 1.959963984540054, 0.8416212335729143
    assert required_n_accuracy(0.05, 0.2) == math.ceil((za * math.sqrt(0.2) + zb * math.sqrt(0.2 - 0.0025)) ** 2
                                                        / 0.0025)
    mde = mde_accuracy(400, 0.15)
    assert 400 * mde ** 2 == pytest.approx((za * math.sqrt(0.15) + zb * math.sqrt(0.15 - mde ** 2)) ** 2, rel=1e-9)
    n = required_n_accuracy(mde, 0.15)
    assert n in (400, 401)
    # the approximation is honest: the exact McNemar test at that n has about the promised power
    assert _exact_mcnemar_power(400, (0.15 - mde) / 2, (0.15 + mde) / 2) == pytest.approx(0.8, abs=0.03)


def test_power_inputs_checked():
    assert observed_discordance(0, 0, 200) == 1 / 200
    assert math.isnan(mde_accuracy(3, 0.1))  # three items can never reach 80% power
    with pytest.raises(ValueError, match="discordance"):
        required_n_accuracy(0.3, 0.2)
    with pytest.raises(ValueError):
        mde_mean(100, 0.3, Power(alpha=1.5))
    assert mde_mean(100, 0.0) == 0.0
