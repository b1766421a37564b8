"""A full disk, damaged stored files, a deleted checkpoint and a read-only store, all real: a
size-limited tmpfs (or a per-file size limit when mounting is not allowed), files cut short,
a store row edited with sqlite3, a store remounted read-only (or opened by an unprivileged user).
Each failure is one `error:` line naming the file and the fix, exit 2, no traceback, and the
store's bytes unchanged; a read-only store reports and exports as a writable one does."""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.cli import main
from test_cli_errors import FAST

REPO = Path(__file__).resolve().parents[1]
RUN_ID_PREFIX = "sst2__"
# A full fine-tune of the tiny model: its training state (weights, best weights, two Adam moments)
# is a few MB, far more than the baseline stage writes; 4 examples a step, a state saved mid-epoch.
FULL = ("--method", "full", "--epochs", "1", "--batch-size", "4", "--evals-per-epoch", "2")


@pytest.fixture(scope="module")
def complete(tiny_model: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete sst2 run (LoRA on the tiny gpt2) to copy and damage."""
    results = tmp_path_factory.mktemp("complete") / "results"
    assert main(_run_args(tiny_model, data_dir, results)) == 0
    return results


def _run_args(tiny_model: Any, data_dir: Path, results: Path, *extra: str) -> list[str]:
    return ["run", "sst2", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir), "--results",
            str(results), *FAST, "--epochs", "0.5", *extra]


@pytest.fixture
def store(complete: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(complete, copy)
    return copy


def _run_dir(results: Path) -> Path:
    (run,) = [p for p in (results / "runs").iterdir() if p.name.startswith(RUN_ID_PREFIX)]
    return run


def _fingerprint(results: Path) -> dict[str, str]:
    """Every file's bytes, but SQLite's WAL side files (a reader may leave an empty pair)."""
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def _one_error_line(result: tuple[int, str, str], *expected: str) -> str:
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and all(part in lines[-1] for part in expected), lines[-1]
    assert not [line for line in lines[:-1] if "error" in line.lower()], err
    return lines[-1]


def _stages(results: Path) -> dict[str, float]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        return dict(db.execute("SELECT stage, finished_at FROM stages"))


@contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real size-limited tmpfs at `folder`, unmounted after; the test is skipped where mounting
    is not allowed (not root, a container without CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): the other test "
                    "of this failure covers it without a mount")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- a full disk while writing the training state ------------------------------------------

def test_disk_full_while_saving_the_training_state_is_one_error_line(bench: Any, tiny_model: Any, data_dir: Path,
                                                                     tmp_path: Path) -> None:
    """A 1 MiB tmpfs holds the baseline but not the training state: safetensors' SafetensorError
    ("I/O error: No space left on device") becomes one line naming the folder; the baseline stays
    stored and no half state is left taking the space."""
    model = tiny_model("gpt2")
    with _tmpfs(tmp_path / "small", "1m") as disk:
        results = disk / "results"
        line = _one_error_line(bench(*_run_args(tiny_model, data_dir, results, *FULL)),
                               "No space left on device", "train_state", "re-run the same command")
        assert str(results) in line
        run = _run_dir(results)
        assert not (run / "train_state.partial").exists() and not (run / "train_state").exists()
        assert list(_stages(results)) == ["baseline:prompt"]
        assert model.is_dir()


def test_file_size_limit_while_saving_the_training_state_is_one_error_line(tiny_model: Any, data_dir: Path,
                                                                           tmp_path: Path) -> None:
    """Without a mount: the same write refused for real by the kernel, through a per-file size
    limit (RLIMIT_FSIZE, the write fails with EFBIG) set on a `bench run` process."""
    limit = 1_500_000  # the store, the baseline's files and the checkpoint fit; the training state does not

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    results = tmp_path / "results"
    args = _run_args(tiny_model, data_dir, results, *FULL)
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          preexec_fn=limited, timeout=600)
    _one_error_line((done.returncode, done.stdout, done.stderr), "File too large", "train_state",
                    "re-run the same command")
    run = _run_dir(results)
    assert not (run / "train_state.partial").exists()
    assert list(_stages(results)) == ["baseline:prompt"]


# --- damaged stored files -------------------------------------------------------------------

def test_truncated_curves_file_is_one_error_line_naming_it(bench: Any, store: Path, tmp_path: Path) -> None:
    curves = _run_dir(store) / "finetune" / "curves.jsonl"
    curves.write_bytes(curves.read_bytes()[:30])  # cut short mid-line, as a full disk or a bad copy does
    before = _fingerprint(store)
    out = tmp_path / "report.html"
    _one_error_line(bench("report", "--results", store, "--format", "html", "--out", out),
                    str(curves), "line 1", "delete it")
    assert _fingerprint(store) == before and not out.exists()


@pytest.mark.parametrize("command", [("report",), ("export", "--to", "OUT")], ids=["report", "export"])
def test_invalid_metrics_json_in_the_store_is_one_error_line(bench: Any, store: Path, tmp_path: Path,
                                                              command: tuple[str, ...]) -> None:
    with sqlite3.connect(store / "bench.sqlite") as db:
        db.execute("UPDATE stages SET metrics = '{\"accuracy\": {\"val' WHERE stage = 'finetuned'")
    db.close()
    before = _fingerprint(store)
    command = tuple(str(tmp_path / "out") if part == "OUT" else part for part in command)
    _one_error_line(bench(*command, "--results", store), "finetuned metrics", _run_dir(store).name,
                    str(store / "bench.sqlite"), "re-run")
    assert _fingerprint(store) == before and not (tmp_path / "out").exists()


def test_a_rerun_redoes_a_stage_whose_stored_record_is_damaged(bench: Any, store: Path, tiny_model: Any,
                                                               data_dir: Path) -> None:
    with sqlite3.connect(store / "bench.sqlite") as db:
        db.execute("UPDATE stages SET metrics = 'not json' WHERE stage = 'finetuned'")
    db.close()
    stored = _stages(store)
    code, out, err = bench(*_run_args(tiny_model, data_dir, store))
    assert code == 0 and "Traceback" not in err and "finetuned: its stored record cannot be read" in err, err
    after = _stages(store)
    assert after["finetuned"] > stored["finetuned"]  # redone
    assert {k: after[k] for k in ("baseline:prompt", "finetune")} == {k: stored[k] for k in ("baseline:prompt",
                                                                                               "finetune")}
    assert bench("report", "--results", store)[0] == 0


@pytest.mark.parametrize("damage", ["truncated-adapter", "deleted-checkpoint"])
def test_a_damaged_or_deleted_checkpoint_says_how_and_the_rerun_trains_it_again(
        bench: Any, store: Path, tiny_model: Any, data_dir: Path, damage: str) -> None:
    from harness.backends.checkpoint import checkpoint_problem

    checkpoint = _run_dir(store) / "checkpoint"
    weights = checkpoint / "adapter_model.safetensors"
    if damage == "truncated-adapter":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        named = str(weights)
    else:
        shutil.rmtree(checkpoint)
        named = f"{checkpoint} is missing"
    before = _fingerprint(store)
    _one_error_line(bench("eval", "sst2", "--model", checkpoint, "--data-dir", data_dir, "--results", store),
                    named, "re-run the `bench run`")
    assert _fingerprint(store) == before

    stored = _stages(store)
    code, out, err = bench(*_run_args(tiny_model, data_dir, store))
    assert code == 0 and "Traceback" not in err and "checkpoint cannot be used" in err, err
    assert checkpoint_problem(checkpoint) is None
    after = _stages(store)
    assert after["finetune"] > stored["finetune"]  # trained again
    assert after["baseline:prompt"] == stored["baseline:prompt"] and after["finetuned"] == stored["finetuned"]
    code, out, err = bench("eval", "sst2", "--model", checkpoint, "--data-dir", data_dir, "--results", store)
    assert code == 0 and "fine-tuned checkpoint" in out, err


# --- a read-only store ----------------------------------------------------------------------

def _report_and_export(bench: Any, results: Path, out: Path) -> tuple[str, dict[str, str]]:
    code, report, err = bench("report", "--results", results)
    assert code == 0, err
    code, _, err = bench("export", "--results", results, "--to", out)
    assert code == 0, err
    return report, {p.name: p.read_text() for p in sorted(out.iterdir())}


def test_a_store_on_a_read_only_mount_reports_and_exports(bench: Any, complete: Path, tiny_model: Any,
                                                          data_dir: Path, tmp_path: Path) -> None:
    expected = _report_and_export(bench, complete, tmp_path / "expected")
    with _tmpfs(tmp_path / "archive", "16m") as disk:
        shutil.copytree(complete, disk / "results")
        before = _fingerprint(disk / "results")
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        assert remounted.returncode == 0, remounted.stderr
        assert _report_and_export(bench, disk / "results", tmp_path / "exported") == expected
        assert _fingerprint(disk / "results") == before
        # a command that writes keeps its clear error
        _one_error_line(bench(*_run_args(tiny_model, data_dir, disk / "results")), "Read-only file system")
        assert _fingerprint(disk / "results") == before


# Linux capabilities that let root write and read whatever the permission bits say.
DAC_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
PR_CAPBSET_DROP = 24


def _bound_by_permissions() -> None:
    """In the child before exec: drop root's permission-bypassing capabilities from the bounding
    set, so the exec'd process is bound by chmod like any user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in DAC_CAPABILITIES:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_store_in_a_folder_its_reader_cannot_write_reports(bench: Any, complete: Path, tmp_path: Path) -> None:
    """Without a mount: a folder and files the reading process may not write (chmod; run as root,
    the report process first gives up the capabilities that write through chmod), read through
    SQLite's immutable open, since the WAL index could not be created there."""
    expected = bench("report", "--results", complete)[1]
    folder = tmp_path / "archive"
    folder.mkdir()
    try:
        results = folder / "results"
        shutil.copytree(complete, results, ignore=shutil.ignore_patterns("*-wal", "*-shm"))  # empty: closed
        for path in [results, *results.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = _fingerprint(results)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            done = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--results", str(results)],
                                  capture_output=True, text=True, env=env, timeout=300,
                                  preexec_fn=_bound_by_permissions if os.geteuid() == 0 else None)
        except subprocess.SubprocessError as exc:  # prctl refused: root here cannot give up the bypass
            pytest.skip(f"cannot make a root process respect chmod here ({exc}); the read-only mount test covers it")
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected
        assert _fingerprint(results) == before
        assert not (results / "bench.sqlite-shm").exists()
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(folder)
