"""Clustered errors end to end: a real tiny squad_v2 run stores each question's cluster (its
article), and `bench report` / `bench compare` use cluster-robust errors for it, equal to
statsmodels' cluster-robust OLS on the stored per-item values; a store written before cluster ids
existed still reports, with naive errors, and says so."""
from __future__ import annotations

import csv
import hashlib
import io
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
sm = pytest.importorskip("statsmodels.api")

from harness.compare.stats import paired_bootstrap, paired_cluster_bootstrap  # noqa: E402

SMALL = ("--train-samples", "16", "--eval-samples", "40", "--validation-samples", "4", "--batch-size", "8",
         "--max-length", "128")


@pytest.fixture(scope="module")
def squad_run(tmp_path_factory: pytest.TempPathFactory, tiny_model, data_dir) -> Path:
    """One tiny span run on real SQuAD v2 (40 eval questions over the validation split's articles)."""
    from harness.cli import main

    results = tmp_path_factory.mktemp("clustered") / "results"
    assert main(["run", "squad_v2", "--models", str(tiny_model("bert")), "--data-dir", str(data_dir),
                 "--results", str(results), *SMALL]) == 0
    return results


def run_id(results: Path) -> str:
    (run,) = (results / "runs").iterdir()
    return run.name


def stored_items(results: Path) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Per-question F1 before and after, and each question's stored cluster key, as stored."""
    import json

    with sqlite3.connect(results / "bench.sqlite") as db:
        def stage(name: str) -> list[tuple]:
            return db.execute("SELECT example_id, metric_values, cluster FROM predictions WHERE stage=? ORDER BY idx",
                              (name,)).fetchall()
        before, after = stage("baseline:head"), stage("finetuned")
    assert [r[0] for r in before] == [r[0] for r in after]
    return (np.array([json.loads(r[1])["f1"] for r in before]), np.array([json.loads(r[1])["f1"] for r in after]),
            [r[2] for r in after])


def test_squad_predictions_store_their_article(squad_run: Path, data_dir: Path) -> None:
    """Each stored question keeps a short hash of its article's title (the task's cluster column)."""
    _, _, keys = stored_items(squad_run)
    with sqlite3.connect(squad_run / "bench.sqlite") as db:
        ids = [r[0] for r in db.execute("SELECT example_id FROM predictions WHERE stage='finetuned' ORDER BY idx")]
    frame = pd.read_parquet(data_dir / "squad_v2" / "validation.parquet").set_index("id")
    expected = [hashlib.sha256(frame.loc[i, "title"].encode()).hexdigest()[:12] for i in ids]
    assert keys == expected and 2 <= len(set(keys)) < len(keys)


def test_report_and_compare_use_cluster_robust_errors(squad_run: Path, bench) -> None:
    before, after, keys = stored_items(squad_run)
    _, codes = np.unique(keys, return_inverse=True)
    fit = sm.OLS(after - before, np.ones((len(keys), 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    low, high = fit.conf_int(alpha=0.05)[0]
    clusters = len(set(keys))
    naive = paired_bootstrap(before, after, resamples=2000, seed=0)
    widening = fit.bse[0] / (np.std(after - before, ddof=1) / np.sqrt(len(keys)))
    note = f"clustered by title: {clusters} clusters over {len(keys)} items; CI ×{widening:.2f} "

    run = run_id(squad_run)
    code, out, err = bench("compare", f"{run}:baseline", run, "--results", squad_run, "--format", "csv")
    assert code == 0, err
    (row,) = csv.DictReader(io.StringIO(out))
    assert float(row["delta_ci_low"]) == pytest.approx(low, abs=1e-6)
    assert float(row["delta_ci_high"]) == pytest.approx(high, abs=1e-6)
    assert float(row["p_value"]) == pytest.approx(fit.pvalues[0], abs=1e-6)
    assert (float(row["delta_ci_naive_low"]), float(row["delta_ci_naive_high"])) == pytest.approx(
        (naive.ci_low, naive.ci_high), abs=1e-9)
    assert int(row["clusters"]) == clusters and row["clustering"].startswith(note) and row["test"] == "CR1 clustered"
    code, out, err = bench("compare", f"{run}:baseline", run, "--results", squad_run)
    assert code == 0 and f"CIs and p: {note}" in out, err
    # equivalence on clustered items: TOST from the cluster-robust SE, Student t with G - 1 df
    from scipy.stats import t

    margin = 5.0
    estimate, se = fit.params[0], fit.bse[0]
    expected = max(t.sf((estimate + margin) / se, clusters - 1), t.cdf((estimate - margin) / se, clusters - 1))
    code, out, err = bench("compare", f"{run}:baseline", run, "--results", squad_run, "--format", "csv",
                           "--margin", str(margin))
    (row,) = csv.DictReader(io.StringIO(out))
    assert code == 0 and float(row["tost_p"]) == pytest.approx(expected, abs=1e-6), (row, err)

    code, out, err = bench("report", "--results", squad_run, "--format", "md")
    assert code == 0 and note in out and "| bootstrap/CR1 p |" in out, err
    code, out, err = bench("report", "--results", squad_run, "--format", "csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert (float(row["delta_ci_low"]), float(row["delta_ci_high"])) == pytest.approx((low, high), rel=1e-5)
    assert float(row["p_value"]) == pytest.approx(fit.pvalues[0], rel=1e-5, abs=1e-9)
    # the HTML page states the p family, the MDE and the clustering under its before/after table
    page_path = squad_run.parent / "report.html"
    code, _, err = bench("report", "--results", squad_run, "--format", "html", "--out", page_path)
    page = page_path.read_text()
    assert code == 0 and note in page and "p adj: Holm" in page and "MDE " in page, err


def test_a_store_without_cluster_ids_reports_naive(squad_run: Path, bench, tmp_path: Path) -> None:
    """A store written before cluster ids existed (its predictions table has no cluster column)
    reports as before: bootstrap CI and p, and a note saying they are naive and why."""
    old = tmp_path / "old"
    shutil.copytree(squad_run, old)
    with sqlite3.connect(old / "bench.sqlite") as db:
        db.execute("ALTER TABLE predictions DROP COLUMN cluster")
    before, after, _ = stored_items(squad_run)
    naive = paired_bootstrap(before, after, resamples=2000, seed=0)
    code, out, err = bench("report", "--results", old, "--format", "csv")
    assert code == 0, err
    (row,) = csv.DictReader(io.StringIO(out))
    assert (float(row["delta_ci_low"]), float(row["delta_ci_high"])) == pytest.approx((naive.ci_low, naive.ci_high),
                                                                                      rel=1e-5)
    assert row["clustering"].startswith("naive (no cluster ids stored)") and row["clusters"] == "0"
    code, out, err = bench("report", "--results", old, "--format", "md")
    assert code == 0 and "naive (no cluster ids stored)" in out and "| bootstrap p |" in out, err
    run = run_id(old)
    code, out, err = bench("compare", f"{run}:baseline", run, "--results", old)
    assert code == 0 and "naive (no cluster ids stored)" in out and "paired bootstrap" in out, err


def test_cluster_bootstrap_resamples_whole_clusters() -> None:
    """Items that move together in clusters: resampling clusters widens the interval that resampling
    items gives; clusters of one item each give the item bootstrap's width."""
    rng = np.random.default_rng(3)
    shift = np.repeat(rng.normal(0, 1, 30), 5)  # 30 clusters of 5 items sharing a shift
    before = rng.normal(0, 0.2, 150)
    after = before + 0.1 + shift + rng.normal(0, 0.2, 150)
    clusters = [str(i // 5) for i in range(150)]
    items = paired_bootstrap(before, after, resamples=2000, seed=0)
    grouped = paired_cluster_bootstrap(before, after, clusters, resamples=2000, seed=0)
    assert grouped.delta == pytest.approx(items.delta)
    assert (grouped.ci_high - grouped.ci_low) > 1.8 * (items.ci_high - items.ci_low)
    alone = paired_cluster_bootstrap(before, after, [str(i) for i in range(150)], resamples=2000, seed=0)
    assert (alone.ci_high - alone.ci_low) == pytest.approx(items.ci_high - items.ci_low, rel=0.15)
    # weighted (a ratio of totals): the observed delta is the weighted one
    weights = rng.integers(1, 20, 150).astype(float)
    weighted = paired_cluster_bootstrap(before, after, clusters, weights=weights, resamples=500, seed=0)
    assert weighted.delta == pytest.approx(np.sum(weights * (after - before)) / weights.sum())
