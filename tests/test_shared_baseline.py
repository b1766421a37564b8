"""Runs that differ only in how they fine-tune evaluate their baseline once: the others copy the
stored stage (same predictions and metrics, recorded as shared with its origin), stay complete on
their own when the first run is deleted, and anything that changes what the baseline sees is
evaluated anew."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

SMALL = ("--train-samples", "16", "--eval-samples", "16", "--validation-samples", "8")
COPIED = "copied from it, not evaluated again"


def _baselines(results: Path) -> dict[str, tuple[Any, ...]]:
    """run id -> (metrics, info, the stage's predictions) of every baseline:prompt stage."""
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = db.execute("SELECT run_id, metrics, json_extract(info, '$.shared_from.run_id') FROM stages "
                          "WHERE stage='baseline:prompt' ORDER BY finished_at").fetchall()
        return {run: (metrics, source, db.execute(
            "SELECT example_id, gold, label, scores, metric_values FROM predictions WHERE run_id=? "
            "AND stage='baseline:prompt' ORDER BY idx", (run,)).fetchall()) for run, metrics, source in rows}


def test_a_sweep_evaluates_its_baseline_once(bench: Any, data_dir: Path, tiny_model: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    common = ("--data-dir", data_dir, "--results", results, *SMALL)
    code, _, err = bench("sweep", "sst2", "--models", tiny_model("gpt2"), *common,
                         "--grid", "lora_rank=2,4", "lr=1e-4,5e-5")
    assert code == 0, err
    assert err.count("baseline:prompt ...") == 4 and err.count(COPIED) == 3  # one evaluation, three copies
    stored = _baselines(results)
    (first, *others) = stored
    assert stored[first][1] is None and all(stored[run][1] == first for run in others)
    assert all(stored[run][0] == stored[first][0] and stored[run][2] == stored[first][2] for run in others)
    assert len(stored[first][2]) == 16

    # deleting the run that computed it breaks no other: each copy is a complete record of its own
    shutil.rmtree(results / "runs" / first)
    with sqlite3.connect(results / "bench.sqlite") as db:
        for table in ("predictions", "stages", "runs"):
            db.execute(f"DELETE FROM {table} WHERE run_id=?", (first,))
    code, out, err = bench("report", "--task", "sst2", "--results", results, "--format", "csv")
    assert code == 0 and all(run in out for run in others) and first not in out, err
    code, out, err = bench("rescore", others[0], "--results", results, "--data-dir", data_dir)
    assert code == 0, err

    # a setting that reaches evaluation (the eval length) is a new baseline, evaluated, not copied
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), *common, "--max-length", "96")
    assert code == 0 and COPIED not in err, err
    # one that only reaches training copies again, from a remaining copy
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), *common, "--lr", "2e-4")
    assert code == 0 and any(f"the same as run {run}'s" in err for run in others) and COPIED in err, err


def test_a_head_baseline_is_shared_only_with_the_same_training_seed(bench: Any, data_dir: Path, tiny_model: Any,
                                                                    tmp_path: Path) -> None:
    """The untrained head is drawn with the training seed: another --train-seed is another baseline."""
    results = tmp_path / "results"
    common = ("sst2", "--models", tiny_model("bert"), "--data-dir", data_dir, "--results", results, *SMALL,
              "--method", "head")
    assert bench("run", *common)[0] == 0
    code, _, err = bench("run", *common, "--lr", "2e-3")
    assert code == 0 and COPIED in err, err
    code, _, err = bench("run", *common, "--train-seed", "7")
    assert code == 0 and COPIED not in err, err
