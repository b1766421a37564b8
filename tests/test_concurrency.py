"""Several `bench` processes on one store at once: the same run twice (one waits for the other,
then skips what it completed) and another run beside them. No record is lost, duplicated or
half-written, and every process prints the same table for the same run."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ARGS = ("--train-samples", "48", "--eval-samples", "12", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64")


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(data_dir: Path, tiny_model: Any, tmp_path: Path
                                                               ) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def start(task: str, seed: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "harness.cli", "run", task, "--models", str(tiny_model("gpt2")),
                                 "--data-dir", str(data_dir), "--results", str(results), *ARGS, "--seed", seed],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    processes = [start("sst2", "0"), start("sst2", "0"), start("sst2", "1"), start("nli", "0")]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    same_run = [out.split("tables:")[0] for out, _ in outputs[:2]]
    assert same_run[0] == same_run[1]  # the same run, the same table, whichever process finished it
    # Both may wait (each briefly holds the run's lock to check the store before any work); one
    # did all three stages, the other found them complete and skipped each.
    assert any("waiting: another bench process" in err for _, err in outputs[:2])
    skipped = sorted((out + err).count("complete in the store, skipped") for out, err in outputs[:2])
    assert skipped == [0, 3], skipped
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
        stages = db.execute("SELECT run_id, count(*) FROM stages GROUP BY run_id").fetchall()
        assert sorted(count for _, count in stages) == [3, 3, 3]
        per_stage = db.execute("SELECT run_id, stage, count(*), count(DISTINCT idx) FROM predictions "
                               "GROUP BY run_id, stage").fetchall()
    assert len(per_stage) == 6 and all(total == distinct == 12 for _, _, total, distinct in per_stage)
