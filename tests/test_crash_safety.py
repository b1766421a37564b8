"""kill -9 at every stage boundary and inside fine-tuning (between and right after training
checkpoints), then the same command again: it resumes (fine-tuning from its last training state),
loses no completed record, and ends with exactly the uninterrupted run's results. The kills are
real SIGKILLs sent by the process to itself at exact points (BENCH_FAULTS, harness/faults.py)."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from judge_server import JudgeServer, Respond

ARGS = ("--train-samples", "96", "--eval-samples", "12", "--validation-samples", "8", "--epochs", "2",
        "--batch-size", "8", "--max-length", "64", "--lr", "1e-3", "--evals-per-epoch", "3")


def _run(task_args: list[str], data_dir: Path, results: Path, tmp_path: Path, faults: str = "",
         extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # One thread: the stored scores (6 decimals) of the killed-and-resumed processes must equal the
    # uninterrupted one's exactly, and two threads on a busy 2-core machine summed some of them in
    # another order (1e-7 apart) from one process to the next.
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "BENCH_FAULTS": faults, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "harness.cli", "run", *task_args, "--data-dir", str(data_dir),
               "--results", str(results), *ARGS, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _state(results: Path) -> dict[str, Any]:
    """Everything a run must reproduce: each stage's metrics and every prediction's scores."""
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stages = {stage: json.loads(metrics) for stage, metrics in db.execute("SELECT stage, metrics FROM stages")}
        for record in stages.values():
            record.pop("best_step", None)
        predictions = db.execute("SELECT stage, idx, example_id, label, scores FROM predictions "
                                 "ORDER BY stage, idx").fetchall()
        duplicates = db.execute("SELECT count(*) FROM (SELECT run_id, stage, idx FROM predictions "
                                "GROUP BY 1, 2, 3 HAVING count(*) > 1)").fetchone()[0]
    assert duplicates == 0
    return {"stages": stages, "predictions": predictions}


@pytest.fixture(scope="module")
def reference(data_dir: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    tmp = tmp_path_factory.mktemp("reference")
    task_args = ["sst2", "--models", str(tiny_model("gpt2"))]
    done = _run(task_args, data_dir, tmp / "results", tmp)
    assert done.returncode == 0, done.stderr
    return task_args, _state(tmp / "results")


@pytest.mark.parametrize("fault, resumed_line", [
    ("kill@baseline-prompt-started=1", None),              # during baseline evaluation
    ("kill@baseline-prompt-files=1", None),                # files written, row not yet committed
    ("kill@train-step=4", None),                            # fine-tuning, before its first checkpoint
    ("kill@finetune-saved=1", "resuming fine-tuning from its checkpoint at step 4"),   # right after one
    ("kill@train-step=17", "resuming fine-tuning from its checkpoint at step 16"),   # between checkpoints
    ("kill@train-state-staged=8", "resuming fine-tuning from its checkpoint at step 4"),  # while saving one
    ("kill@finetune-files=1", "resuming fine-tuning"),     # trained, checkpoint saved, stage not committed
    ("kill@finetuned-started=1", None),                     # during the post-fine-tune evaluation
    ("kill@finetuned-files=1", None),
    ("kill@report-written=1", None),                        # between the table files
])
def test_sigkill_then_rerun_gives_the_uninterrupted_result(reference: tuple[list[str], dict], data_dir: Path,
                                                           tmp_path: Path, fault: str, resumed_line: str | None
                                                           ) -> None:
    task_args, expected = reference
    results = tmp_path / "results"
    killed = _run(task_args, data_dir, results, tmp_path, faults=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if (results / "bench.sqlite").exists():
        _state(results)  # whatever the kill left is a consistent store
    resumed = _run(task_args, data_dir, results, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if resumed_line:
        assert resumed_line in resumed.stderr
    assert _state(results) == expected
    assert not list(results.rglob("*.partial")) and not list(results.rglob("train_state"))
    assert len(list((results / "tables").glob("*.md"))) == 1 and "Δacc" in resumed.stdout


def test_sigkill_while_judging_resumes_without_paying_twice(data_dir: Path, tiny_model: Any, tmp_path: Path
                                                           ) -> None:
    def judge(prompt: str, number: int, body: dict[str, Any]) -> Respond:
        return Respond('{"winner": "B"}' if "Response A" in prompt else '{"score": %d}' % (len(prompt) % 97))

    task_args = ["alpaca", "--models", str(tiny_model("gpt2"))]
    small = ("--train-samples", "8", "--eval-samples", "5", "--validation-samples", "2", "--max-new-tokens", "4",
             "--max-length", "192")  # the Alpaca template alone is 72 tiny-tokenizer tokens
    with JudgeServer(judge) as server:
        extra = (*small, "--judge", f"openai:{server.url}/v1#judge")
        killed = _run(task_args, data_dir, tmp_path / "r", tmp_path, faults="kill@judge-replies=7", extra=extra)
        assert killed.returncode == -signal.SIGKILL
        assert len(server.requests) >= 7
        before_resume = len(server.requests)
        paid_before_kill = _cached(tmp_path / "r")
        assert 0 < paid_before_kill <= 7  # 7 replies cached (identical before/after outputs share a key)
        resumed = _run(task_args, data_dir, tmp_path / "r", tmp_path, extra=extra)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        # the resumed run asks only what was not cached before the kill (replies in flight at the
        # kill were never cached, so they are asked again)
        assert len(server.requests) - before_resume == _cached(tmp_path / "r") - paid_before_kill
    assert "## LLM judge" in resumed.stdout


def _cached(results: Path) -> int:
    with sqlite3.connect(results / "judge_cache.sqlite") as cache:
        return cache.execute("SELECT count(*) FROM replies").fetchone()[0]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    from harness.store import atomic_write

    target = tmp_path / "tables" / "x.md"
    atomic_write(target, "old")
    with pytest.raises(TypeError):
        atomic_write(target, None)  # type: ignore[arg-type]
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["x.md"]
    atomic_write(target, b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
