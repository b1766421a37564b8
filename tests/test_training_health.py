"""Training health: a NaN/inf loss stops the run with one clear line and keeps the last good
training state; running out of device memory splits the batch instead of dying."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

ARGS = ("--train-samples", "64", "--eval-samples", "8", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64", "--evals-per-epoch", "4")


def _run(bench: Any, tiny_model: Any, data_dir: Path, results: Path, *extra: Any) -> tuple[int, str, str]:
    return bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                 *ARGS, *extra)


def test_nan_loss_stops_and_keeps_the_last_good_state(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_FAULTS", "nan@train-step=5")
    results = tmp_path / "results"
    code, out, err = _run(bench, tiny_model, data_dir, results)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: training loss became nan at step 5")
    assert "the last good training state (step 4) is kept in" in last and "lower --lr" in last
    state = next((results / "runs").iterdir()) / "train_state"
    assert (state / "state.json").is_file() and json.loads((state / "state.json").read_text())["loop"]["step"] == 4
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert [s for (s,) in db.execute("SELECT stage FROM stages")] == ["baseline:prompt"]  # nothing half-done
    monkeypatch.delenv("BENCH_FAULTS")
    code, out, err = _run(bench, tiny_model, data_dir, results)  # the fault gone, the run resumes from step 4
    assert code == 0 and "resuming fine-tuning from its checkpoint at step 4" in err


def test_exploding_learning_rate_is_stopped_not_trained_on(bench: Any, tiny_model: Any, data_dir: Path,
                                                           tmp_path: Path) -> None:
    code, _, err = _run(bench, tiny_model, data_dir, tmp_path / "results", "--lr", "1e30", "--max-grad-norm", "1e30",
                        "--optimizer", "sgd", "--method", "full")
    assert code == 2 and "error: training loss became nan at step 1" in err and "lower --lr (now 1e+30)" in err


def test_an_update_that_breaks_the_model_is_never_kept_as_a_good_state(bench: Any, tiny_model: Any, data_dir: Path,
                                                                       tmp_path: Path) -> None:
    """AdamW at lr 1e30: the first loss is finite, the first update is not; the validation after it
    must stop the run instead of saving that state as one to resume from."""
    results = tmp_path / "results"
    code, _, err = _run(bench, tiny_model, data_dir, results, "--lr", "1e30", "--train-samples", "32")
    assert code == 2, err
    assert "error: the model's weights or outputs became inf/nan by step 1" in err and "lower --lr" in err
    assert not (next((results / "runs").iterdir()) / "train_state").exists()


def test_out_of_memory_backs_off_the_batch(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_FAULTS", "oom@train-step=2")
    results = tmp_path / "results"
    code, out, err = _run(bench, tiny_model, data_dir, results)
    assert code == 0, err
    assert "out of memory: batch now runs as 2 pieces of ~4 examples" in err
    with sqlite3.connect(results / "bench.sqlite") as db:
        info = json.loads(db.execute("SELECT info FROM stages WHERE stage='finetune'").fetchone()[0])
    assert info["oom_backoff_pieces"] == 2 and info["steps"] == 8


def test_out_of_memory_in_evaluation_halves_the_eval_batch(bench: Any, tiny_model: Any, data_dir: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = {}
    for name, faults in (("reference", ""), ("oom", "oom@eval-batch=32,oom@eval-batch=16")):
        monkeypatch.setenv("BENCH_FAULTS", faults)
        code, _, err = bench("eval", "sst2", "--model", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                             tmp_path / name, "--eval-samples", "24", "--eval-batch-size", "32" if faults else "8")
        assert code == 0, err
        with sqlite3.connect(tmp_path / name / "bench.sqlite") as db:
            info = json.loads(db.execute("SELECT info FROM stages").fetchone()[0])
            found[name] = (info["eval_batch_size"], db.execute("SELECT label FROM predictions ORDER BY idx").fetchall())
    assert found["oom"][0] == 8 and found["oom"][1] == found["reference"][1]  # 32 -> 16 -> 8, same predictions


def test_training_records_flops(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    code, _, err = _run(bench, tiny_model, data_dir, tmp_path / "results", "--epochs", "0.5")
    assert code == 0, err
    with sqlite3.connect(tmp_path / "results" / "bench.sqlite") as db:
        info = json.loads(db.execute("SELECT info FROM stages WHERE stage='finetune'").fetchone()[0])
    assert info["train_flops"] == 6.0 * info["params"]["total"] * info["train_tokens"] > 0
    assert info["train_tflops_per_s"] > 0
