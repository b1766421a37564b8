"""Clustered errors for paired comparisons: items that share a cluster (SQuAD questions on one
article) are not independent, so their CIs and paired tests use cluster-robust errors.

A task declares the column that clusters its eval items (`HubData.cluster`, else its `group`);
each stored prediction carries its example's cluster key. Here the stored keys decide: per-item
means (accuracy, EM, F1, ROUGE) get the CR1 standard error of the paired difference (Miller 2024,
arXiv 2411.00640, Appendix A); a token-weighted NLL, which is not a per-item mean, gets a cluster
bootstrap. Runs stored before cluster keys existed keep their naive errors, and say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from harness.compare.stats import (
    BOOTSTRAP_RESAMPLES,
    PairedBootstrapResult,
    clustered_mean,
    clustered_paired_difference,
    paired_cluster_bootstrap,
)
from harness.errors import BenchError
from harness.task.registry import spec_for
from harness.types import Prediction

# Below this many clusters the normal interval of a cluster-robust SE is too narrow (CR1 needs a
# few dozen clusters); the note says so.
FEW_CLUSTERS = 20


@dataclass(frozen=True)
class PairedDelta:
    """The delta (after − before) with the CI and p-value a table shows, the naive ones beside
    them, and the words for the table notes (empty when the task declares no clusters)."""

    delta: float
    ci: tuple[float, float]
    p_value: float
    naive_ci: tuple[float, float]
    clusters: int  # 0: not clustered
    note: str

    @property
    def clustered(self) -> bool:
        return self.clusters > 0


def declared_column(config: dict[str, Any]) -> str | None:
    """The column the run's task clusters its eval items by; None when it declares none or the
    task is not registered here (then there is nothing to say about clusters)."""
    try:
        return spec_for(config).data.cluster_column
    except BenchError:
        return None


def stored_keys(*sides: Sequence[Prediction]) -> list[str] | None:
    """Each paired item's stored cluster key, from the first side that stored them all; None when
    none did (a run stored before cluster keys, or a task without clusters)."""
    for side in sides:
        keys = [p.cluster for p in side]
        if keys and all(keys):
            return [str(k) for k in keys]
    return None


def paired_delta(before: Sequence[float], after: Sequence[float], keys: Sequence[str] | None,
                 column: str | None, naive: PairedBootstrapResult, *, naive_p: float | None = None,
                 weights: Sequence[float] | None = None, seed: int = 0) -> PairedDelta:
    """The cluster-robust delta where the items share clusters, else the naive one (`naive`: the
    paired bootstrap; `naive_p`: the naive test's p-value when it is not the bootstrap's, e.g.
    McNemar). CR1 of the per-item differences for means; with `weights` (a ratio of totals), a
    paired cluster bootstrap. The note says which, over how many clusters, and how much wider."""
    naive_ci = (naive.ci_low, naive.ci_high)
    p = naive.p_value if naive_p is None else naive_p
    n = len(before)
    plain = PairedDelta(naive.delta, naive_ci, p, naive_ci, 0, "")
    if column is None and keys is None:
        return plain
    name = column or "cluster"
    if keys is None:
        return PairedDelta(naive.delta, naive_ci, p, naive_ci, 0,
                           f"naive (no cluster ids stored): this task clusters items by {name}, but the run was "
                           "stored before cluster ids were; `bench rescore RUN` adds them")
    count = len(set(keys))
    if count >= n:
        return PairedDelta(naive.delta, naive_ci, p, naive_ci, 0,
                           f"naive: no two of the {n} items share a {name}, so clustering changes nothing")
    if count < 2:
        return PairedDelta(naive.delta, naive_ci, p, naive_ci, 0,
                           f"naive: all {n} items share one {name}; clustered errors need several clusters")
    if weights is None:
        result, p_clustered = clustered_paired_difference(before, after, keys)
        ci, widening, how = result.ci, result.widening, "CR1 cluster-robust SE of the paired differences"
    else:
        boot = paired_cluster_bootstrap(before, after, keys, weights=weights, resamples=BOOTSTRAP_RESAMPLES,
                                        seed=seed)
        ci, p_clustered, how = (boot.ci_low, boot.ci_high), boot.p_value, "paired cluster bootstrap"
        naive_width = naive.ci_high - naive.ci_low
        widening = (ci[1] - ci[0]) / naive_width if naive_width > 0 else math.nan
    return PairedDelta(naive.delta, (float(ci[0]), float(ci[1])), p_clustered, naive_ci, count,
                       clustered_note(name, count, n, widening, how))


def clustered_note(column: str, clusters: int, items: int, widening: float, how: str) -> str:
    """"clustered by title: 31 clusters over 60 items; CI ×1.42 wider than naive (...)"."""
    if math.isnan(widening):
        size = "naive CI has zero width"
    elif widening >= 1:
        size = f"CI ×{widening:.2f} wider than naive"
    else:
        size = f"CI ×{widening:.2f} the naive width"
    few = (f"; only {clusters} clusters: the interval may still be too narrow" if clusters < FEW_CLUSTERS else "")
    return f"clustered by {column}: {clusters} clusters over {items} items; {size} ({how}){few}"


def clustered_ci(values: Sequence[float], keys: Sequence[str] | None, reported: float
                 ) -> tuple[float, float] | None:
    """The CR1 interval of a stage's headline from its per-item values, at the scale it is
    reported on (SQuAD's F1 is 100 × the mean of per-item F1s); None where it is not a per-item
    mean (then its stored CI stands) or the items are not clustered."""
    if keys is None or not values or not 2 <= len(set(keys)) < len(values):
        return None
    result = clustered_mean(values, keys)
    for scale in (1.0, 100.0):
        if math.isclose(result.mean * scale, reported, rel_tol=1e-6, abs_tol=1e-6 * scale):
            return (result.ci[0] * scale, result.ci[1] * scale)
    return None
