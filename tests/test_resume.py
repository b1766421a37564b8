"""Re-running a command skips completed stages; a run killed with SIGKILL mid-fine-tune resumes
and ends with the same table as an uninterrupted run (same seed, CPU)."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

ARGS = ("--train-samples", "160", "--eval-samples", "16", "--validation-samples", "8", "--epochs", "2",
        "--batch-size", "8", "--max-length", "64", "--lr", "1e-3")


def _command(task_args: list[str], data_dir: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", *task_args, "--data-dir", str(data_dir),
            "--results", str(results), *ARGS]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _accuracy_rows(results: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        return sorted((stage, metrics) for stage, metrics in db.execute(
            "SELECT stage, json_extract(metrics, '$.accuracy.value') FROM stages"))


def test_rerun_skips_completed_stages_and_prints_the_same_table(bench, data_dir, tiny_model, tmp_path):
    args = ("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path,
            "--train-samples", "16", "--eval-samples", "8", "--validation-samples", "8")
    code, first, _ = bench(*args)
    assert code == 0
    code, second, err = bench(*args)
    assert code == 0
    assert err.count("complete in the store, skipped") == 3
    strip = lambda text: [line for line in text.splitlines() if "wall time" not in line]  # noqa: E731
    assert strip(first) == strip(second)


def test_sigkill_during_fine_tuning_resumes_to_the_uninterrupted_result(data_dir, tiny_model, tmp_path):
    model = str(tiny_model("gpt2"))
    task_args = ["sst2", "--models", model]
    env = _env(tmp_path)

    reference = tmp_path / "reference"
    subprocess.run(_command(task_args, data_dir, reference), env=env, check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_command(task_args, data_dir, interrupted), env=env, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    for line in process.stderr:  # wait until training has started, then kill without warning
        if "finetune ..." in line or time.monotonic() > deadline:
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    stored = {stage for stage, _ in _accuracy_rows(interrupted)}
    assert "baseline:prompt" in stored and "finetuned" not in stored  # the kill landed mid-run

    resumed = subprocess.run(_command(task_args, data_dir, interrupted), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "baseline:prompt: complete in the store, skipped" in resumed.stderr
    assert _accuracy_rows(interrupted) == _accuracy_rows(reference)
    with sqlite3.connect(interrupted / "bench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM predictions WHERE stage='finetuned'").fetchone()[0] == 16
