"""How small a difference a paired comparison can detect, and how many examples a target needs.

Two designs: accuracy (0/1 per item, McNemar: only discordant items carry information, so the
observed discordance rate drives power) and any per-item metric (paired t: the SD of the per-item
differences drives power). Defaults are 80% power at two-sided alpha 0.05.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# What a planner assumes without a stored run: the worst case for each design.
WORST_DISCORDANCE = 0.5
WORST_SD = 0.5


@dataclass(frozen=True)
class Power:
    alpha: float = 0.05
    power: float = 0.8

    def z(self) -> tuple[float, float]:
        from scipy.stats import norm

        _check(self.alpha, self.power)
        return float(norm.isf(self.alpha / 2.0)), float(norm.ppf(self.power))


def _check(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha:g} and {power:g}")


def mde_accuracy(n: int, discordance: float, design: Power = Power()) -> float:
    """Smallest accuracy difference a McNemar test on n paired items detects, when a share
    `discordance` (= (b + c) / n) of the items is right in one system and wrong in the other.

    Normal approximation of Connor (1987): n δ² = (z_{1-α/2} √ψ + z_{power} √(ψ − δ²))², solved for
    δ. The difference can never exceed the discordance, so the answer is at most ψ; nan when n is
    too small for any difference to reach the power.
    """
    _check_n(n)
    psi = _check_discordance(discordance)
    za, zb = design.z()
    from scipy.optimize import brentq

    def excess(delta: float) -> float:
        return za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0)) - delta * math.sqrt(n)

    if excess(psi) > 0:
        return math.nan
    return float(brentq(excess, 1e-12, psi, xtol=1e-12))


def required_n_accuracy(delta: float, discordance: float, design: Power = Power()) -> int:
    """Paired items needed for McNemar to detect an accuracy difference `delta` (Connor 1987)."""
    psi = _check_discordance(discordance)
    delta = abs(delta)
    if not 0 < delta < psi:
        raise ValueError(f"the target difference must be above 0 and below the discordance {psi:g}, got {delta:g}")
    za, zb = design.z()
    return math.ceil((za * math.sqrt(psi) + zb * math.sqrt(psi - delta * delta)) ** 2 / delta ** 2)


def paired_t_power(effect_size: float, n: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at standardized effect d = Δ / SD(differences),
    like statsmodels `TTestPower().power` (noncentral t, both tails)."""
    from scipy.special import nctdtr  # scipy.stats.nct's cdf gives nan far in a tail
    from scipy.stats import t

    df = n - 1
    crit = float(t.isf(alpha / 2.0, df))
    nc = effect_size * math.sqrt(n)
    power = 1.0 - nctdtr(df, nc, crit) + nctdtr(df, nc, -crit)
    return float(power) if math.isfinite(power) else 1.0  # nan only far beyond any power asked for


def mde_mean(n: int, sd: float, design: Power = Power()) -> float:
    """Smallest mean paired difference a paired t test on n items detects, given the SD of the
    per-item differences (like `TTestPower().solve_power(nobs=n, ...)` times the SD)."""
    _check_n(n)
    _check(design.alpha, design.power)
    if not sd >= 0 or not math.isfinite(sd):
        raise ValueError(f"the SD of the differences must be a finite number >= 0, got {sd:g}")
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    za, zb = design.z()
    normal = (za + zb) / math.sqrt(n)  # the normal answer: the t one lies a little above it
    effect = brentq(lambda d: paired_t_power(d, n, design.alpha) - design.power, 0.5 * normal, 3.0 * normal + 1.0,
                    xtol=1e-14)
    return float(effect * sd)


def required_n_mean(delta: float, sd: float, design: Power = Power()) -> int:
    """Paired items needed for a paired t test to detect a mean difference `delta` given the SD of
    the per-item differences (statsmodels' `TTestPower().solve_power(nobs=None)`, rounded up)."""
    _check(design.alpha, design.power)
    if not delta != 0 or not math.isfinite(delta) or not sd > 0:
        raise ValueError(f"need a non-zero target difference and an SD above 0, got {delta:g} and {sd:g}")
    from scipy.optimize import brentq

    effect = abs(delta) / sd
    za, zb = design.z()
    normal = ((za + zb) / effect) ** 2  # the t answer lies a little above the normal one
    n = brentq(lambda m: paired_t_power(effect, m, design.alpha) - design.power, max(2.0 + 1e-9, 0.5 * normal),
               2.0 * normal + 10.0, xtol=1e-9)
    return math.ceil(n - 1e-9)


def observed_discordance(b: int, c: int, n: int) -> float:
    """(b + c) / n, counting one discordant item when none was seen: zero would claim that any
    difference, however small, is detectable."""
    _check_n(n)
    return max(b + c, 1) / n


def _check_n(n: int) -> None:
    if n < 2:
        raise ValueError(f"power needs at least 2 paired items, got {n}")


def _check_discordance(psi: float) -> float:
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"discordance must lie in (0, 1], got {psi:g}")
    return float(psi)
