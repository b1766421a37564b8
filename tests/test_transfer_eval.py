"""`bench eval TASK --model CHECKPOINT` of a checkpoint trained on another task: allowed when the
label sets match (sst2 -> imdb) or with --label-map, recorded as a transfer evaluation, refused
in one line otherwise. Head and LM-objective checkpoints, tiny models, the real datasets."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

SMALL = ("--train-samples", "24", "--eval-samples", "16", "--validation-samples", "8", "--eval-batch-size", "8",
         "--batch-size", "8", "--max-length", "96")
EVAL = ("--eval-samples", "16", "--max-length", "96")
SAME = {"negative": "negative", "positive": "positive"}
SWAPPED = "negative=positive,positive=negative"


@pytest.fixture(scope="module")
def checkpoints(tiny_model, data_dir, tmp_path_factory) -> dict[str, Path]:
    """sst2 checkpoints: a LoRA classification head (tiny BERT) and LoRA on the LM objective (tiny GPT-2)."""
    from harness.cli import main

    found = {}
    for family in ("bert", "gpt2"):
        results = tmp_path_factory.mktemp(f"sst2-{family}")
        assert main(["run", "sst2", "--models", str(tiny_model(family)), "--method", "lora", "--data-dir",
                     str(data_dir), "--results", str(results), *SMALL]) == 0
        (run_dir,) = (results / "runs").iterdir()
        found[family] = run_dir / "checkpoint"
    return found


def eval_records(results: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        runs = db.execute("SELECT r.run_id, r.config, s.metrics, s.info FROM runs r JOIN stages s "
                          "ON s.run_id = r.run_id ORDER BY r.run_id").fetchall()
        found = []
        for run_id, config, metrics, info in runs:
            predictions = db.execute("SELECT example_id, gold, label, scores FROM predictions WHERE run_id = ? "
                                     "ORDER BY idx", (run_id,)).fetchall()
            found.append({"run_id": run_id, "config": json.loads(config), "metrics": json.loads(metrics),
                          "info": json.loads(info),
                          "predictions": [(i, g, label, json.loads(s)) for i, g, label, s in predictions]})
    return found


@pytest.mark.parametrize("family, mode", [("bert", "head"), ("gpt2", "prompt 0-shot")])
def test_a_checkpoint_transfers_to_a_task_with_the_same_labels(bench, checkpoints, data_dir, tmp_path, family, mode):
    checkpoint = checkpoints[family]
    code, out, err = bench("eval", "imdb", "--model", checkpoint, "--data-dir", data_dir, "--results", tmp_path, *EVAL)
    assert code == 0, err
    assert f"imdb | {checkpoint} | transfer sst2 -> imdb (same labels), fine-tuned checkpoint, {mode} | n 16 |" in out
    (record,) = eval_records(tmp_path)
    transfer = {"source_task": "sst2", "target_task": "imdb", "how": "same labels", "label_map": SAME}
    assert record["config"]["transfer"] == transfer and record["info"]["transfer"] == transfer
    assert record["config"]["task"] == "imdb" and "__from-sst2-" in record["run_id"]
    assert any("imdb" in name for name in record["info"]["data_hashes"])  # imdb's eval examples
    predictions = record["predictions"]
    assert len(predictions) == 16 and all(label in (0, 1) and len(scores) == 2 for _, _, label, scores in predictions)
    accuracy = sum(gold == label for _, gold, label, _ in predictions) / 16
    assert record["metrics"]["accuracy"]["value"] == pytest.approx(accuracy)

    # The same checkpoint with its labels swapped by a map: every prediction flips, another record.
    code, out, err = bench("eval", "imdb", "--model", checkpoint, "--data-dir", data_dir, "--results", tmp_path,
                           *EVAL, "--label-map", SWAPPED)
    assert code == 0, err
    assert "transfer sst2 -> imdb (label map negative=positive, positive=negative)" in out
    swapped = next(r for r in eval_records(tmp_path) if r["run_id"] != record["run_id"])
    assert swapped["config"]["transfer"]["how"] == "--label-map"
    assert [(i, 1 - label) for i, _, label, _ in predictions] == [(i, label) for i, _, label, _ in swapped["predictions"]]
    assert swapped["metrics"]["accuracy"]["value"] == pytest.approx(1 - accuracy)


def test_a_label_map_to_a_larger_label_set_predicts_only_mapped_labels(bench, checkpoints, data_dir, tmp_path):
    code, out, err = bench("eval", "nli", "--model", checkpoints["bert"], "--data-dir", data_dir, "--results", tmp_path,
                           *EVAL, "--label-map", "negative=contradiction,positive=entailment")
    assert code == 0, err
    assert "transfer sst2 -> nli (label map negative=contradiction, positive=entailment)" in out
    (record,) = eval_records(tmp_path)
    assert record["config"]["transfer"]["label_map"] == {"negative": "contradiction", "positive": "entailment"}
    for _, _, label, scores in record["predictions"]:  # nli: entailment, neutral, contradiction
        assert label in (0, 2) and scores[1] == 0.0 and sum(scores) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("task, extra, expected", [
    ("nli", (), "was trained on task sst2, not nli"),
    ("nli", (), "--label-map negative="),
    ("nli", ("--label-map", "negative=entailment"), "'positive' not mapped"),
    ("nli", ("--label-map", "bad=entailment,positive=neutral"), "'bad' is not a label of the checkpoint's task"),
    ("nli", ("--label-map", "negative=happy,positive=neutral"), "'happy' is not a label of nli"),
    ("nli", ("--label-map", "negative=neutral,negative=entailment"), "'negative' is mapped twice"),
    ("imdb", ("--label-map", "negative positive"), "give SOURCE=TARGET pairs"),
    ("sst2", ("--label-map", SWAPPED), "drop --label-map"),
    ("samsum", (), "only classification checkpoints transfer"),
], ids=["no-map", "suggests-map", "unmapped", "unknown-source", "unknown-target", "twice", "malformed",
        "own-task", "text-task"])
def test_labels_that_do_not_carry_over_are_one_line(bench, checkpoints, data_dir, tmp_path, task, extra, expected):
    results = tmp_path / "results"
    code, out, err = bench("eval", task, "--model", checkpoints["bert"], "--data-dir", data_dir, "--results", results,
                           *EVAL, *extra)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not results.exists()  # nothing stored


def test_a_label_map_with_demonstrations_is_refused(bench, checkpoints, data_dir, tmp_path):
    code, _, err = bench("eval", "imdb", "--model", checkpoints["gpt2"], "--data-dir", data_dir, "--results",
                         tmp_path / "r", *EVAL, "--shots", "2", "--label-map", SWAPPED)
    assert code == 2 and "add --shots 0" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()
