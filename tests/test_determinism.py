"""Determinism on CPU: the same command and seed give the same metrics and predictions twice; the
record holds what reproduces it; the eval batch size does not change zero-shot predictions."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

ARGS = ("--train-samples", "32", "--eval-samples", "24", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64")


def _stored(results: Path) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        metrics = {stage: json.loads(m) for stage, m in db.execute("SELECT stage, metrics FROM stages")}
        predictions = db.execute("SELECT stage, idx, example_id, label, scores FROM predictions ORDER BY 1, 2").fetchall()
        info = {stage: json.loads(i) for stage, i in db.execute("SELECT stage, info FROM stages")}
    return metrics, predictions, info


def test_same_command_and_seed_give_the_same_results(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path
                                                     ) -> None:
    runs = []
    for name in ("first", "second"):
        code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                             tmp_path / name, *ARGS, "--seed", "3")
        assert code == 0, err
        runs.append(_stored(tmp_path / name))
    (metrics_a, predictions_a, info), (metrics_b, predictions_b, _) = runs
    assert metrics_a == metrics_b and predictions_a == predictions_b
    record = info["finetuned"]
    assert {"torch", "transformers", "peft", "numpy", "python"} <= set(record["versions"])
    assert any(path.endswith("train.parquet") for path in record["data_hashes"])
    assert all(len(digest) == 64 for digest in record["data_hashes"].values())
    config = json.loads((next((tmp_path / "first" / "runs").iterdir()) / "config.json").read_text())
    assert config["seed"] == 3 and config["train_samples"] == 32 and config["model"] == str(tiny_model("gpt2"))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_eval_batch_size_does_not_change_zero_shot_predictions(bench: Any, tiny_model: Any, data_dir: Path,
                                                               tmp_path: Path, family: str) -> None:
    found = []
    for batch in ("1", "7", "32"):
        results = tmp_path / f"batch{batch}"
        code, _, err = bench("eval", "sst2", "--model", tiny_model(family), "--data-dir", data_dir, "--results",
                             results, "--eval-samples", "40", "--eval-batch-size", batch, "--max-length", "64")
        assert code == 0, err
        with sqlite3.connect(results / "bench.sqlite") as db:
            found.append(db.execute("SELECT example_id, label, scores FROM predictions ORDER BY idx").fetchall())
    reference = found[0]
    for other in found[1:]:
        assert [(i, label) for i, label, _ in other] == [(i, label) for i, label, _ in reference]
        for (_, _, a), (_, _, b) in zip(reference, other):
            assert json.loads(a) == pytest.approx(json.loads(b), abs=1e-4)  # padding changes float sums only
