"""A run resumed after its data files changed must not pair stages scored on different gold labels.

Before: a run killed after its baseline, whose eval file then had its labels flipped, resumed
without a word and compared the stored baseline (old labels) with the fine-tuned model scored on
the new ones (accuracy 0.688 -> 0.312 reported as a delta of +0.000, p = 1.000). Now the re-run
refuses in one line naming the changed file, leaves the store as it was, and `--force-new` starts
the run over; a comparison of stages whose gold differs per example refuses as well.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

ARGS = ("--train-samples", "32", "--eval-samples", "16", "--validation-samples", "8", "--epochs", "2",
        "--batch-size", "8", "--max-length", "64", "--lr", "1e-3", "--evals-per-epoch", "2")


def _small_sst2(data_dir: Path, into: Path) -> Path:
    """A few hundred real sst2 rows per split, in a data folder of the test's own."""
    import pandas as pd

    folder = into / "sst2"
    folder.mkdir(parents=True)
    for split, rows in (("train", 300), ("validation", 200)):
        pd.read_parquet(data_dir / "sst2" / f"{split}.parquet").head(rows).to_parquet(folder / f"{split}.parquet")
    return into


def _flip_labels(path: Path) -> None:
    import pandas as pd

    frame = pd.read_parquet(path)
    frame["label"] = 1 - frame["label"]
    frame.to_parquet(path)


def _run(model: Path, data: Path, results: Path, tmp_path: Path, *extra: str, faults: str = ""
         ) -> subprocess.CompletedProcess[str]:
    # One thread: the run started over must store the reference's scores to the last stored digit, and
    # with two threads on a busy machine one score in a CI run came out 1e-6 apart (a sum's order).
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "BENCH_FAULTS": faults, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "harness.cli", "run", "sst2", "--models", str(model), "--data-dir", str(data),
               "--results", str(results), *ARGS, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _files(root: Path) -> dict[str, bytes]:
    """Every byte of the store. A killed run leaves SQLite's write-ahead log beside the database,
    which the next connection folds in (any reader does): folded in first and emptied, so what is
    compared is the database file itself, not where SQLite kept its pages for a while."""
    db = sqlite3.connect(root / "bench.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and not path.name.endswith(("-wal", "-shm"))}


def _state(results: Path) -> dict[str, Any]:
    """What the run stored: each stage's metrics, every prediction (gold included)."""
    with closing(sqlite3.connect(results / "bench.sqlite")) as db:
        stages = {stage: json.loads(metrics) for stage, metrics in db.execute("SELECT stage, metrics FROM stages")}
        predictions = db.execute("SELECT stage, idx, example_id, gold, label, scores FROM predictions "
                                 "ORDER BY stage, idx").fetchall()
    for record in stages.values():
        record.pop("best_step", None)
    return {"stages": stages, "predictions": predictions}


@pytest.fixture(scope="module")
def flipped_reference(data_dir: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
                      ) -> dict[str, Any]:
    """The uninterrupted run on the flipped data: what a run started over must store."""
    tmp = tmp_path_factory.mktemp("flipped")
    data = _small_sst2(data_dir, tmp / "data")
    _flip_labels(data / "sst2" / "validation.parquet")
    done = _run(tiny_model("gpt2"), data, tmp / "results", tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    return _state(tmp / "results")


@pytest.mark.parametrize("fault, resumed_from", [
    ("kill@finetune-started=1", "baseline"),               # baseline stored, fine-tuning not begun
    ("kill@finetune-saved=1", "a training state"),         # baseline stored, fine-tuning mid-way
])
def test_a_rerun_on_changed_eval_labels_refuses_then_force_new_starts_over(
        data_dir: Path, tiny_model: Any, tmp_path: Path, flipped_reference: dict[str, Any], fault: str,
        resumed_from: str) -> None:
    model = tiny_model("gpt2")
    data = _small_sst2(data_dir, tmp_path / "data")
    results = tmp_path / "results"
    killed = _run(model, data, results, tmp_path, faults=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "baseline:prompt" in _state(results)["stages"]
    if resumed_from == "a training state":
        assert list(results.rglob("train_state"))

    eval_file = data / "sst2" / "validation.parquet"
    _flip_labels(eval_file)
    stored = _files(results)
    refused = _run(model, data, results, tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert str(eval_file) in errors[0] and "--force-new" in errors[0] and "--results DIR" in errors[0]
    assert "train.parquet" not in errors[0]  # only the file that changed is named
    assert _files(results) == stored  # not a byte of the store changed
    assert refused.stdout == ""  # no table

    fresh = _run(model, data, results, tmp_path, "--force-new")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "complete in the store, skipped" not in fresh.stderr and "resuming fine-tuning" not in fresh.stderr
    assert _state(results) == flipped_reference  # exactly the uninterrupted run on the new data
    assert not list(results.rglob("*.discarded")) and not list(results.rglob("train_state*"))
    # the run started over is an ordinary run again: the same command resumes (skips) it
    again = _run(model, data, results, tmp_path)
    assert again.returncode == 0 and again.stderr.count("complete in the store, skipped") == 3, again.stderr


def test_a_finished_run_refuses_to_reuse_its_stages_when_the_train_file_changed(
        bench: Any, data_dir: Path, tiny_model: Any, tmp_path: Path) -> None:
    data = _small_sst2(data_dir, tmp_path / "data")
    args = ("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data, "--results", tmp_path / "r", *ARGS)
    code, _, err = bench(*args)
    assert code == 0, err
    _flip_labels(data / "sst2" / "train.parquet")
    stored = _files(tmp_path / "r")
    code, out, err = bench(*args)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("error: ") and str(data / "sst2" / "train.parquet") in err
    assert "validation.parquet" not in err.strip().splitlines()[-1]
    assert _files(tmp_path / "r") == stored


def _stage(store: Any, run_id: str, stage: str, golds: list[int], labels: list[int]) -> None:
    from harness.metrics.classification import classification_report
    from harness.types import Prediction

    config = {"task": "sst2", "model": "m", "method": "lora", "preset": "quick", "seed": 0}
    predictions = [Prediction(f"e{i}", g, p, (-0.5, -1.0)) for i, (g, p) in enumerate(zip(golds, labels))]
    store.complete_stage(run_id, stage, config=config, seconds=1.0,
                         metrics=classification_report(golds, labels, ("negative", "positive"), resamples=10),
                         info={"mode": "prompt", "shots": 0}, predictions=predictions)


def test_stages_with_other_gold_labels_for_the_same_ids_are_not_compared(bench: Any, tmp_path: Path) -> None:
    """The issue's numbers: the same 16 answers scored against labels that were then flipped."""
    from harness.compare.paired import compare
    from harness.errors import BenchError
    from harness.store import Store

    golds = [i % 2 for i in range(16)]
    answers = [g if i < 11 else 1 - g for i, g in enumerate(golds)]  # 11 of 16 right: 0.688
    store = Store(tmp_path / "results")
    run_id = "sst2__m__lora__changed"
    _stage(store, run_id, "baseline:prompt", golds, answers)
    store.complete_stage(run_id, "finetune", config=store.run_config(run_id) or {}, seconds=2.0, metrics={},
                         info={"params": {"base": 100, "added": 4, "trainable": 4, "trainable_pct": 3.8},
                               "train_seconds": 2.0, "tokens_per_second": 10.0})
    _stage(store, run_id, "finetuned", [1 - g for g in golds], answers)  # 0.312 on the flipped labels
    records = {stage: store.stage(run_id, stage) for stage in store.stages_of(run_id)}
    with pytest.raises(BenchError, match=r"run sst2__m__lora__changed: baseline:prompt and finetuned were scored "
                                         r"against different gold labels \(16 of 16 examples"):
        compare(store, run_id, store.run_config(run_id) or {}, records)
    store.close()
    for command in (("report",), ("report", "--format", "html"), ("export", "--to", tmp_path / "out")):
        code, out, err = bench(*command, "--results", tmp_path / "results")
        assert code == 2 and "Δ" not in out, (command, out, err)
        assert err.count("error:") == 1 and run_id in err and "baseline:prompt" in err, err
    assert not (tmp_path / "out").exists()


def test_text_stages_with_other_references_are_not_compared(tmp_path: Path) -> None:
    """Text predictions keep no gold: the stages' recorded digests of the eval references differ."""
    from harness.compare.paired import compare
    from harness.errors import BenchError
    from harness.records import gold_digest
    from harness.store import Store
    from harness.types import Example, Prediction

    examples = [Example(f"e{i}", (f"question {i}",), references=(f"answer {i}",)) for i in range(4)]
    changed = [Example(e.id, e.texts, references=("another answer",)) for e in examples]
    config = {"task": "alpaca", "model": "m", "method": "lora", "preset": "quick", "seed": 0}
    store = Store(tmp_path / "results")
    run_id = "alpaca__m__lora__changed"
    metric = {"rougeL": {"value": 0.5, "ci": [0.4, 0.6]}, "headline": "rougeL", "failures": 0}
    for stage, used in (("baseline:prompt", examples), ("finetune", None), ("finetuned", changed)):
        predictions = [Prediction(e.id, -1, None, (), output="an answer", values={"rougeL": 0.5}) for e in examples]
        info = {"eval_gold": gold_digest(used)} if used else {
            "params": {"base": 100, "added": 4, "trainable": 4, "trainable_pct": 3.8}, "train_seconds": 2.0,
            "tokens_per_second": 10.0}
        store.complete_stage(run_id, stage, config=config, seconds=1.0, metrics=metric if used else {}, info=info,
                             predictions=predictions if used else ())
    records = {stage: store.stage(run_id, stage) for stage in store.stages_of(run_id)}
    with pytest.raises(BenchError, match="different gold labels or references"):
        compare(store, run_id, config, records)
    store.close()


def test_a_training_state_from_other_data_is_not_resumed(tmp_path: Path) -> None:
    """A training state with no stage stored yet is checked by the inputs recorded beside it."""
    import dataclasses

    from harness.errors import BenchError
    from harness.options import RunConfig
    from harness.run.resume import check_stored_run, record_training_inputs
    from harness.store import Store
    from harness.types import Splits

    store = Store(tmp_path / "results")
    run_id = "sst2__m__lora__state"
    before = Splits((), (), (), source_hashes={"/d/sst2/train.parquet": "a" * 64, "/d/sst2/validation.parquet": "b" * 64})
    config = RunConfig(task="sst2", model="m", lr=1e-3)
    record_training_inputs(store.run_dir(run_id), config, before)
    check_stored_run(store, run_id, config, before)  # the same data and config: resumes
    with pytest.raises(BenchError, match=r"/d/sst2/validation.parquet changed since its training state"):
        check_stored_run(store, run_id, config, dataclasses.replace(
            before, source_hashes={**before.source_hashes, "/d/sst2/validation.parquet": "c" * 64}))
    with pytest.raises(BenchError, match=r"its training state differs from this command's settings in lr"):
        check_stored_run(store, run_id, dataclasses.replace(config, lr=1e-4), before)
    store.close()


def test_an_interrupted_discard_is_finished_not_left_half_done(tmp_path: Path) -> None:
    """--force-new renames the run folder aside before deleting its rows: a crash between the two
    leaves a folder aside, and the next check finishes the discard instead of resuming a run
    whose files are gone."""
    from harness.run.resume import check_stored_run
    from harness.store import Store
    from harness.types import Splits

    store = Store(tmp_path / "results")
    run_id = "sst2__m__lora__discard"
    _stage(store, run_id, "baseline:prompt", [0, 1], [0, 0])
    folder = store.run_dir(run_id)
    folder.rename(folder.with_name(f".{folder.name}.discarded"))  # where a crash right after the rename leaves it
    check_stored_run(store, run_id, None, Splits((), (), ()))
    assert store.stages_of(run_id) == [] and store.run_config(run_id) is None
    assert not list((tmp_path / "results" / "runs").iterdir())
    _stage(store, run_id, "baseline:prompt", [0, 1], [0, 0])
    assert store.discard_run(run_id) and store.stages_of(run_id) == [] and not folder.exists()
    assert not store.discard_run(run_id)  # nothing left to discard
    store.close()
