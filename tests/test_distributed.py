"""bench under torchrun for real: 2 gloo processes on this CPU (harness/distributed.py).

The 2-process evaluation gives the single-process predictions; one DDP optimizer step gives the
single-process step's weights on the same global batch (every method); a rank killed by SIGKILL
leaves a store that a single-process re-run resumes (another number of ranks); the options that
cannot work over the processes at hand are one error line before anything is written."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ("--train-samples", "48", "--eval-samples", "12", "--validation-samples", "8", "--batch-size", "8",
        "--max-length", "64", "--evals-per-epoch", "2", "--lr", "1e-3")
BOTH = ("--baseline", "both")  # prompt scoring and a classification head: two kinds of request
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # One thread per process: two processes on a shared 2-core machine, and sums in a fixed order.
    return {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _run(processes: int, model: Path, data_dir: Path, results: Path, tmp_path: Path, *extra: str,
         **env: str) -> subprocess.CompletedProcess[str]:
    launcher = TORCHRUN if processes == 2 else (sys.executable,)
    command = [*launcher, "-m", "harness.cli", "run", "sst2", "--models", str(model), "--data-dir", str(data_dir),
               "--results", str(results), *ARGS, *extra]
    return subprocess.run(command, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def _predictions(results: Path) -> dict[tuple[str, int], tuple[str, str, list[float]]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = db.execute("SELECT stage, idx, example_id, label, scores FROM predictions").fetchall()
    return {(stage, idx): (example, label, json.loads(scores)) for stage, idx, example, label, scores in rows}


def _stages(results: Path) -> list[str]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        return sorted(stage for (stage,) in db.execute("SELECT stage FROM stages"))


@pytest.fixture(scope="module")
def single(tiny_model: Callable[[str], Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("single")
    done = _run(1, tiny_model("gpt2"), data_dir, tmp / "results", tmp, *BOTH)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "results"


def test_two_processes_evaluate_exactly_as_one_and_store_one_complete_run(
        single: Path, tiny_model: Callable[[str], Path], data_dir: Path, tmp_path: Path) -> None:
    done = _run(2, tiny_model("gpt2"), data_dir, tmp_path / "results", tmp_path, *BOTH)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = ["baseline:head", "baseline:prompt", "finetune", "finetuned"]
    assert _stages(tmp_path / "results") == _stages(single) == stages
    one, two = _predictions(single), _predictions(tmp_path / "results")
    baseline = sorted(key for key in one if key[0].startswith("baseline:"))
    assert len(baseline) == 24 and sorted(key for key in two if key[0].startswith("baseline:")) == baseline
    for key in baseline:
        (example, label, scores), (example2, label2, scores2) = one[key], two[key]
        assert (example2, label2) == (example, label)  # the same example at the same place, the same answer
        # Scores agree to the stored 6 decimals but for rounding: a shard's batches pad differently.
        assert max(abs(a - b) for a, b in zip(scores, scores2)) <= 1e-5
    # One writer: one table per run, no second store, and every rank's run folder is rank 0's.
    assert len(list((tmp_path / "results" / "tables").glob("*.md"))) == 1
    assert done.stdout.count("## sst2: before / after fine-tuning") == 1


def test_one_ddp_or_fsdp_step_equals_the_single_process_step(tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    script, model = str(ROOT / "tests" / "ddp_step.py"), str(tiny_model("bert"))
    for launcher, out in (((sys.executable,), "one"), (TORCHRUN, "two")):
        done = subprocess.run([*launcher, script, model, str(tmp_path / out)], env=_env(tmp_path),
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    for method in ("full", "lora", "freeze1", "head"):
        one, two = (load_file(tmp_path / out / f"{method}.safetensors") for out in ("one", "two"))
        assert one.keys() == two.keys() and one
        assert max(float((one[name] - two[name]).abs().max()) for name in one) <= 1e-5, method
        facts = [safe_open(tmp_path / out / f"{method}.safetensors", "pt").metadata() for out in ("one", "two")]
        assert facts[0]["tokens"] == facts[1]["tokens"]  # global sums, not rank 0's share
        assert abs(float(facts[0]["loss"]) - float(facts[1]["loss"])) <= 1e-6
    one, sharded = (load_file(tmp_path / out) for out in ("one/full.safetensors", "two/fsdp.safetensors"))
    assert one.keys() == sharded.keys()
    assert max(float((one[name] - sharded[name]).abs().max()) for name in one) <= 1e-5  # FSDP2 = one process


def test_a_killed_fsdp_fine_tune_resumes_sharded_or_in_one_process_on_the_same_weights(
        tiny_model: Callable[[str], Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    script, model = str(ROOT / "tests" / "fsdp_resume.py"), str(tiny_model("bert"))

    def fine_tune(launcher: tuple[str, ...], out: str, mode: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*launcher, script, model, str(tmp_path / out), mode], env=_env(tmp_path, **env),
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    whole = fine_tune(TORCHRUN, "whole", "fsdp")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = fine_tune(TORCHRUN, "killed", "fsdp", BENCH_FAULTS="kill@train-step=3", BENCH_FAULTS_RANK="1")
    assert killed.returncode != 0 and f"exitcode  : {-signal.SIGKILL}" in killed.stderr, killed.stderr[-3000:]
    shutil.copytree(tmp_path / "killed", tmp_path / "one")  # the same saved state, resumed by one plain process
    reference = load_file(tmp_path / "whole" / "weights.safetensors")
    for launcher, out, mode in ((TORCHRUN, "killed", "fsdp"), ((sys.executable,), "one", "plain")):
        resumed = fine_tune(launcher, out, mode)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming fine-tuning from its checkpoint at step 3/6" in resumed.stdout, resumed.stdout[-2000:]
        assert "restoring the weights" not in resumed.stdout  # the last step's weights: trained after the resume
        weights = load_file(tmp_path / out / "weights.safetensors")
        assert weights.keys() == reference.keys()
        assert max(float((weights[name] - reference[name]).abs().max()) for name in weights) <= 1e-5, out


def test_a_killed_rank_leaves_a_store_one_process_resumes(tiny_model: Callable[[str], Path], data_dir: Path,
                                                          tmp_path: Path) -> None:
    model, results = tiny_model("gpt2"), tmp_path / "results"
    killed = _run(2, model, data_dir, results, tmp_path, BENCH_FAULTS="kill@train-step=5", BENCH_FAULTS_RANK="1")
    assert killed.returncode != 0 and f"exitcode  : {-signal.SIGKILL}" in killed.stderr, killed.stderr[-3000:]
    assert _stages(results) == ["baseline:prompt"]  # rank 0 committed the baseline, nothing half-written
    resumed = _run(1, model, data_dir, results, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "baseline:prompt: complete in the store, skipped" in resumed.stderr
    assert "resuming fine-tuning from its checkpoint at step 3" in resumed.stderr  # saved by rank 0 of 2
    assert _stages(results) == ["baseline:prompt", "finetune", "finetuned"]


@pytest.mark.parametrize("world, flags, message", [
    ("2", ("--batch-size", "7"), "--batch-size 7 does not split over 2 processes: use a multiple of 2"),
    ("2", ("--fsdp", "--method", "lora"), "--fsdp shards full fine-tuning; --method lora"),
    ("2", ("--fsdp", "--method", "head", "--objective", "head"), "--fsdp shards full fine-tuning; --method head"),
    ("1", ("--fsdp", "--method", "full"), "--fsdp shards a model over several processes: launch with torchrun"),
    ("2", ("--lm-eval", "arc_easy"), "--lm-eval runs in one process"),
])
def test_what_cannot_run_over_the_processes_is_one_error_line(bench: Callable[..., Any], tiny_model: Any,
                                                              data_dir: Path, tmp_path: Path, world: str,
                                                              flags: tuple[str, ...], message: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The checks read only WORLD_SIZE (what torchrun sets), before joining any process group.
    monkeypatch.setenv("WORLD_SIZE", world)
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                         tmp_path / "results", *ARGS, *flags)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()


def test_an_error_under_torchrun_stops_every_rank_before_anything_is_written(
        tiny_model: Callable[[str], Path], data_dir: Path, tmp_path: Path) -> None:
    done = _run(2, tiny_model("gpt2"), data_dir, tmp_path / "results", tmp_path, "--batch-size", "9")
    # The first rank out stops torchrun, which ends the other (it may not have printed its line yet).
    assert done.returncode != 0 and "exitcode  : 2 " in done.stderr
    assert "error: --batch-size 9 does not split over 2 processes" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", [("eval", "sst2", "--model"), ("sweep", "sst2", "--grid", "lr=1e-3", "--models")])
def test_one_process_commands_refuse_torchrun(bench: Callable[..., Any], tiny_model: Any, data_dir: Path,
                                              tmp_path: Path, command: tuple[str, ...],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = bench(*command, tiny_model("gpt2"), "--data-dir", data_dir, "--results", tmp_path / "results")
    assert code == 2 and err.startswith(f"error: bench {command[0]} runs in one process"), err
    assert not (tmp_path / "results").exists()
