"""`bench sweep --launcher local|slurm`: one submitit job per cell. With the local executor (real
subprocesses here) a 2-cell sweep stores exactly the inline sweep's runs and prints its table; a
cell killed mid-training fails with its log named and the same sweep again resumes it; --no-wait
returns while the cells run and `bench report --sweep` collects them. The Slurm options reach the
job array's sbatch script; bad launcher input is one `error:` line, exit 2, nothing written."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitit")

ARGS = ("--train-samples", "48", "--eval-samples", "12", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64", "--lr", "1e-3", "--evals-per-epoch", "3", "--grid", "lora_rank=2,4")
TIMING = ("train s", "peak MB")  # measured, not computed: they differ from one process to the next


def _sweep(model: Path, data_dir: Path, results: Path, cache: Path, *extra: str, faults: str = "",
           timeout: int = 900) -> subprocess.CompletedProcess[str]:
    # one thread, as in the crash-safety tests: the scores of separate processes must be equal exactly
    env = {**os.environ, "BENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "BENCH_FAULTS": faults, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "harness.cli", "sweep", "sst2", "--models", str(model), "--data-dir",
               str(data_dir), "--results", str(results), *ARGS, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _state(results: Path, drop_best_step: bool = False) -> dict[str, Any]:
    """Every stage's metrics and every prediction's scores, per run."""
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stages = {(run, stage): json.loads(metrics)
                  for run, stage, metrics in db.execute("SELECT run_id, stage, metrics FROM stages")}
        predictions = db.execute("SELECT run_id, stage, idx, example_id, label, scores FROM predictions "
                                 "ORDER BY run_id, stage, idx").fetchall()
    if drop_best_step:  # as in the crash-safety tests: a resumed fine-tune records where it stopped differently
        for record in stages.values():
            record.pop("best_step", None)
    return {"stages": stages, "predictions": predictions}


def _table(text: str) -> list[list[str]]:
    """The sweep table's rows without the measured columns."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ")]
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING]
    return [[row[i] for i in keep] for row in rows]


@pytest.fixture(scope="module")
def inline(data_dir: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("inline")
    done = _sweep(tiny_model("gpt2"), data_dir, tmp / "results", tmp / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    (name,) = [p.stem for p in (tmp / "results" / "sweeps").glob("*.json")]
    return {"state": _state(tmp / "results"), "table": _table(done.stdout), "name": name,
            "model": tiny_model("gpt2")}


def test_local_cells_store_the_inline_sweeps_runs(inline: dict[str, Any], data_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = _sweep(inline["model"], data_dir, results, tmp_path / "cache", "--launcher", "local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _state(results) == inline["state"]  # both cells complete, every metric and score equal
    assert len({run for run, _ in inline["state"]["stages"]}) == 2
    assert _table(done.stdout) == inline["table"]  # the same table, printed as the inline sweep prints it
    assert "2 cells submitted as local jobs" in done.stderr and "[cell 2/2]" in done.stderr
    logs = list((results / "slurm" / inline["name"]).glob("*_log.err"))
    assert len(logs) == 2 and all("finetuned: accuracy" in log.read_text() for log in logs)


def test_a_killed_cell_fails_with_its_log_and_the_same_sweep_resumes_it(inline: dict[str, Any], data_dir: Path,
                                                                         tmp_path: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    # every cell's job SIGKILLs itself right after its first training state is saved (step 2 of 6)
    killed = _sweep(inline["model"], data_dir, results, cache, "--launcher", "local", faults="kill@finetune-saved=1")
    assert killed.returncode == 1, killed.stderr[-3000:]
    failed = killed.stderr.splitlines()[-1]
    assert failed.startswith("2 of 2 cells failed: lora_rank=2: job ") and "ended without a result" in failed
    logs = [Path(part.split(")")[0]) for part in failed.split("(log: ")[1:]]
    assert len(logs) == 2 and all(log.is_file() for log in logs)
    assert "failed: job" in (results / "sweeps" / f"{inline['name']}.md").read_text()
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert not db.execute("SELECT count(*) FROM stages WHERE stage = 'finetuned'").fetchone()[0]

    resumed = _sweep(inline["model"], data_dir, results, cache, "--launcher", "local")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _state(results, drop_best_step=True) == {**inline["state"], "stages": {
        key: {k: v for k, v in record.items() if k != "best_step"} for key, record in inline["state"]["stages"].items()}}
    assert _table(resumed.stdout) == inline["table"]
    new_logs = [log for log in (results / "slurm" / inline["name"]).glob("*_log.err") if log not in logs]
    assert len(new_logs) == 2
    for log in new_logs:  # each cell resumed: its baseline kept, its fine-tuning continued from step 2
        text = log.read_text()
        assert "complete in the store, skipped" in text and "resuming fine-tuning from its checkpoint at step 2" in text


def test_no_wait_returns_and_report_collects_the_cells_later(bench: Any, inline: dict[str, Any], data_dir: Path,
                                                             tmp_path: Path) -> None:
    results, folder = tmp_path / "results", tmp_path / "logs"
    submitted = _sweep(inline["model"], data_dir, results, tmp_path / "cache", "--launcher", "local", "--no-wait",
                       "--slurm-folder", str(folder), timeout=300)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert f"bench report --sweep {inline['name']} --results {results}" in submitted.stdout
    assert "| lora_rank" not in submitted.stdout  # no table: the cells are still running
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("SELECT count(*) FROM stages WHERE stage = 'finetuned'").fetchone()[0] < 2
    deadline = time.monotonic() + 900
    while len(list(folder.glob("*_result.pkl"))) < 2:  # each cell's job writes its result when it ends
        assert time.monotonic() < deadline, "the cells' jobs did not finish"
        time.sleep(2)
    code, out, err = bench("report", "--sweep", inline["name"], "--results", results, "--format", "md")
    assert code == 0, err
    assert _state(results) == inline["state"]
    assert _table(out.split("## Sweep")[1])[:3] == inline["table"]


# ---------------------------------------------------------------- options and bad input

SWEEP = ("sweep", "sst2", "--models", "gpt2", "--grid", "lora_rank=2,4")


@pytest.mark.parametrize("extra, message", [
    (("--partition", "gpu"), "--partition is an option of Slurm jobs: add --launcher slurm"),
    (("--launcher", "local", "--partition", "gpu"), "--partition is an option of Slurm jobs: add --launcher slurm"),
    (("--slurm-option", "account=x"), "--slurm-option is an option of Slurm jobs"),
    (("--no-wait",), "--no-wait applies to cells run as scheduler jobs: add --launcher slurm"),
    (("--gpus-per-cell", "1"), "--gpus-per-cell applies to cells run as scheduler jobs"),
    (("--launcher", "local", "--time-limit", "0"), "--time-limit 0: give 1 or more"),
    (("--launcher", "slurm", "--slurm-option", "account"), "--slurm-option 'account': expected KEY=VALUE"),
])
def test_bad_launcher_options_are_one_error_and_write_nothing(bench: Any, tmp_path: Path, extra: tuple[str, ...],
                                                              message: str) -> None:
    code, out, err = bench(*SWEEP, "--results", tmp_path / "results", *extra)
    assert code == 2 and out == "" and err.startswith("error: " + message) and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()


def test_slurm_without_sbatch_is_one_error(bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder with no sbatch in it
    code, _, err = bench(*SWEEP, "--results", tmp_path / "results", "--launcher", "slurm", "--partition", "gpu")
    assert code == 2 and err == ("error: --launcher slurm needs Slurm's sbatch and srun on PATH (run the sweep on a "
                                 "cluster's login node), or use --launcher local to run the cells as subprocesses "
                                 "here\n")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_launcher_without_submitit_is_one_error(bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                launcher: str) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError, as when not installed
    code, _, err = bench(*SWEEP, "--results", tmp_path / "results", "--launcher", launcher)
    assert code == 2 and err == (f"error: --launcher {launcher} needs submitit: pip install 'bench[slurm]' "
                                 "(or pip install 'submitit>=1.5')\n")
    assert not (tmp_path / "results").exists()


def test_slurm_options_reach_the_job_arrays_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from submitit.core.utils import DelayedSubmission

    from harness.cli import build_parser
    from harness.run.launchers import CellJob, make_executor

    args = build_parser().parse_args([*SWEEP, "--launcher", "slurm", "--partition", "gpu", "--gpus-per-cell", "2",
                                      "--cpus-per-cell", "8", "--mem-gb", "64", "--time-limit", "90",
                                      "--slurm-option", "account=proj", "--slurm-option", "qos=high"])
    tools = tmp_path / "bin"  # submitit's Slurm executor wants srun on PATH; nothing here runs it
    tools.mkdir()
    (tools / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tools / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor("slurm", tmp_path, "sweep__sst2__x", args, cells=3)
    array = executor._executor  # what submitit's map_array does for 3 cells, short of calling sbatch
    array.parameters["map_count"] = 3
    script = array._make_submission_file_text(array._submitit_command_str, "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=64GB", "#SBATCH --time=90", "#SBATCH --array=0-2%3", "#SBATCH --account=proj",
                 "#SBATCH --qos=high", "#SBATCH --job-name=bench-sweep__sst2__x", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@"):
        assert line in script, line
    assert executor._executor.max_num_timeout == 3  # a cell at its time limit is requeued, and resumes
    job = CellJob(str(tmp_path), None)
    again = DelayedSubmission(job, "spec", "run")._checkpoint_function()  # what submitit calls at the limit
    assert again is not None and again.function is job and again.args == ("spec", "run")



def test_sbatch_refusing_the_array_is_one_error_and_runs_nothing(bench: Any, data_dir: Path, tiny_model: Any,
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    tools = tmp_path / "bin"  # a cluster whose sbatch knows no partition "nope"
    tools.mkdir()
    (tools / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    (tools / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "results"
    code, out, err = bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                           results, *ARGS, "--launcher", "slurm", "--partition", "nope")
    assert code == 2 and err.splitlines()[-1] == (
        "error: the scheduler refused the sweep's jobs: sbatch: error: invalid partition specified: nope; fix the "
        "option it names (--partition, --slurm-option, --time-limit, ...) and run the sweep again"), err
    assert err.count("invalid partition") == 1  # said once, in the error line (submitit prints it too)
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert db.execute("SELECT count(*) FROM stages").fetchone()[0] == 0
