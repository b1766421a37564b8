"""Hostile and broken inputs, beyond the basics in test_cli_errors.py: malformed files, wrong
types, oversized and duplicate rows, contradictory options, unsafe models and paths. Each gets one
`error:` line naming the problem and the fix, exit code 2, and leaves the store as it was."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from test_cli_errors import FAST, assert_clean_failure

GOOD = pd.DataFrame({"sentence": ["a fine film ", "a dull film ", "great fun ", "a bore "] * 5,
                     "label": [1, 0, 1, 0] * 5})
# other texts than GOOD's: training rows that repeat an eval text are dropped
EVAL = GOOD.assign(sentence=["a fine play", "a dull play", "great music", "a long bore"] * 5)


def _data(tmp_path: Path, train: Any, validation: Any = EVAL, suffix: str = ".parquet") -> Path:
    """A data dir whose sst2/train is `train`: a DataFrame (written as `suffix`) or raw bytes."""
    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    validation.to_parquet(folder / "validation.parquet", index=False)
    target = folder / f"train{suffix}"
    if isinstance(train, bytes):
        target.write_bytes(train)
    elif suffix == ".csv":
        train.to_csv(target, index=False)
    elif suffix == ".jsonl":
        train.to_json(target, orient="records", lines=True)
    else:
        train.to_parquet(target, index=False)
    return tmp_path / "data"


@pytest.mark.parametrize("train, suffix, expected", [
    pytest.param(b"PAR1 this is not parquet", ".parquet", "cannot read", id="malformed-parquet"),
    pytest.param(b"sentence,label\n\"unclosed,1\nfine,0,extra,fields\n", ".csv", "cannot read", id="malformed-csv"),
    pytest.param(b'{"sentence": "ok", "label": 1}\n{"sentence": broken\n', ".jsonl", "cannot read",
                 id="malformed-jsonl"),
    pytest.param("sentence,label\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"), ".csv", "cannot read", id="non-utf8-csv"),
    pytest.param(GOOD.assign(sentence=list(range(20))), ".parquet", "row 0 is 0, not a text", id="int-texts"),
    pytest.param(GOOD.assign(label=["pos", "neg"] * 10), ".parquet", "column 'label' row 0 is 'pos', not a class id",
                 id="string-labels"),
    pytest.param(GOOD.assign(label=[0.5] * 20), ".parquet", "column 'label' row 0 is 0.5, not a class id",
                 id="fractional-label"),
    pytest.param(GOOD.assign(label=[-1] * 20), ".parquet", "column 'label' row 0 is -1, not a class id",
                 id="negative-label"),
    pytest.param(GOOD.assign(sentence=[np.nan] + ["ok "] * 19), ".parquet", "row 0 is nan, not a text",
                 id="nan-text"),
    pytest.param(GOOD.assign(sentence=["  "] * 20), ".parquet", "has no non-blank texts", id="all-blank"),
    pytest.param(GOOD.assign(sentence=["x" * 1_048_576] + ["ok "] * 19), ".parquet", "1,048,576 characters",
                 id="one-megabyte-example"),
    pytest.param(GOOD.assign(id=["a", "b", "a", "c"] * 5), ".parquet", "id 'a' appears more than once",
                 id="duplicate-ids"),
    pytest.param(GOOD.assign(sentence=["ok"] * 20).astype({"label": "float64"}).assign(label=np.nan), ".parquet",
                 "column 'label' row 0 is nan", id="nan-labels"),
    pytest.param(GOOD.assign(label=[1, 0, 1, 0] * 5), ".jsonl", None, id="valid-jsonl-control"),
    # "NA", "None", "null" and "" are texts in a CSV, not missing values
    pytest.param(GOOD.assign(sentence=["NA", "None", "null", "fine "] * 5), ".csv", None, id="csv-na-words-are-texts"),
])
def test_broken_files(bench: Any, tiny_model: Any, tmp_path: Path, train: Any, suffix: str,
                      expected: str | None) -> None:
    data = _data(tmp_path, train, suffix=suffix)
    results = tmp_path / "results"
    args = ("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data, "--results", results, *FAST,
            "--epochs", "0.5")
    if expected is None:  # the control: the same layout with valid rows runs
        assert bench(*args)[0] == 0
        return
    assert_clean_failure(bench(*args), expected, results)


@pytest.mark.parametrize("flags, expected", [
    pytest.param(("--epochs", "0"), "--epochs must be positive", id="epochs-zero"),
    pytest.param(("--batch-size", "0"), "--batch-size must be positive", id="batch-size-zero"),
    pytest.param(("--grad-accum", "-2"), "--grad-accum must be positive", id="grad-accum-negative"),
    pytest.param(("--eval-samples", "0"), "--eval-samples must be at least 1", id="eval-samples-zero"),
    pytest.param(("--max-length", "4"), "--max-length must be at least 16", id="max-length-tiny"),
    pytest.param(("--warmup-ratio", "1.5"), "--warmup-ratio must be in [0, 1)", id="warmup-over-one"),
    pytest.param(("--shots", "-1"), "--shots must be 0 or more", id="shots-negative"),
    pytest.param(("--lora-dropout", "1"), "--lora-dropout must be in [0, 1)", id="dropout-one"),
    pytest.param(("--method", "head", "--objective", "lm"), "--method head trains only a new classification head",
                 id="head-with-lm-objective"),
    pytest.param(("--schedule", "exponential"), "unknown --schedule 'exponential'", id="unknown-schedule"),
    pytest.param(("--baseline", "oracle"), "unknown baseline 'oracle'", id="unknown-baseline"),
    pytest.param(("--preset", "huge"), "unknown preset 'huge'", id="unknown-preset"),
])
def test_bad_hyperparameters(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                             flags: tuple[str, ...], expected: str) -> None:
    results = tmp_path / "results"
    assert_clean_failure(bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                               "--results", results, *FAST, *flags), expected, results)


@pytest.mark.parametrize("task, flags, expected", [
    pytest.param("alpaca", ("--shots", "2"), "--shots applies to classification prompts", id="shots-on-text-task"),
    pytest.param("squad_v2", ("--baseline", "prompt"), "squad_v2 --mode span trains and evaluates a span head",
                 id="span-with-prompt-baseline"),
    pytest.param("alpaca", ("--baseline", "head"), "it has no classification head", id="text-task-head"),
    pytest.param("squad_v2", ("--mode", "extract"), "--mode", id="unknown-squad-mode"),
])
def test_contradictory_options(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path, task: str,
                               flags: tuple[str, ...], expected: str) -> None:
    results = tmp_path / "results"
    model = tiny_model("bert" if task == "squad_v2" and "--mode" not in flags else "gpt2")
    assert_clean_failure(bench("run", task, "--models", model, "--data-dir", data_dir, "--results", results,
                               *FAST, *flags), expected, results)


@pytest.mark.parametrize("grid, expected", [
    pytest.param(("lora_rank",), "expected KEY=V1,V2", id="grid-no-equals"),
    pytest.param(("colour=red,blue",), "unknown key 'colour'", id="grid-unknown-key"),
    pytest.param(("lr=fast,slow",), "'fast' is not a valid", id="grid-bad-value"),
    pytest.param(("lora_rank=2,,4",), "empty value", id="grid-empty-value"),
    pytest.param(("lora_rank=2,2",), "a value is repeated", id="grid-repeated"),
])
def test_invalid_grid_syntax(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path,
                             grid: tuple[str, ...], expected: str) -> None:
    results = tmp_path / "results"
    assert_clean_failure(bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir,
                               "--results", results, *FAST, "--grid", *grid), expected, results)


def _copy_model(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_model_that_needs_remote_code_is_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model("gpt2"), tmp_path / "custom")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil-gpt", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    results = tmp_path / "results"
    assert_clean_failure(bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *FAST),
                         "pass --trust-remote-code", results)


def test_pickle_only_weights_are_refused(bench: Any, tiny_model: Any, data_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model("gpt2"), tmp_path / "pickled")
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pretend pickle")
    results = tmp_path / "results"
    assert_clean_failure(bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *FAST),
                         "bench loads safetensors only", results)


# --- commands against an existing store: refused, and the store is left exactly as it was ------

@pytest.fixture(scope="module")
def store(tiny_model: Any, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("store") / "results"
    code = main(["run", "sst2", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir), "--results",
                 str(results), *FAST, "--epochs", "0.5"])
    assert code == 0
    return results


def _snapshot(results: Path) -> tuple[Any, ...]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = tuple(tuple(db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall())
                     for table in ("runs", "stages", "predictions"))
    files = tuple(sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()
                         and not p.name.startswith("bench.sqlite")))
    return rows, files


@pytest.mark.parametrize("command, expected", [
    pytest.param(("rescore", "../../etc"), "no run '../../etc'", id="rescore-path-traversal"),
    pytest.param(("export", "--to", "../outside"), "'..' components are not allowed", id="export-traversal"),
    pytest.param(("report", "--format", "html", "--out", "../x.html"), "'..' components", id="report-out-traversal"),
    pytest.param(("report", "--sweep", "../../secrets"), "no sweep", id="sweep-name-traversal"),
    pytest.param(("judge", "../../etc", "--judge", "hf:smollm2"), "neither a run id nor a task", id="judge-target"),
    pytest.param(("judge", "sst2", "--judge", "hf:smollm2"), "judging needs generated text", id="judge-classification"),
    pytest.param(("eval", "nli", "--model", "CHECKPOINT"), "was trained on task sst2", id="checkpoint-other-task"),
])
def test_commands_on_a_store_fail_cleanly_and_leave_it_intact(bench: Any, store: Path, data_dir: Path,
                                                               command: tuple[str, ...], expected: str) -> None:
    before = _snapshot(store)
    run_dir = next((store / "runs").iterdir())
    command = tuple(str(run_dir / "checkpoint") if part == "CHECKPOINT" else part for part in command)
    code, out, err = bench(*command, "--results", store, *(("--data-dir", data_dir) if command[0] in
                                                          ("eval", "judge") else ()))
    assert code == 2 and err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert _snapshot(store) == before
    assert not (store.parent / "outside").exists() and not (store.parent / "x.html").exists()


# --- a damaged store, a full disk, a folder where a file goes: one line, no traceback ---------

def _one_error_line(result: tuple[int, str, str], expected: str) -> None:
    code, out, err = result
    lines = err.splitlines()  # `bench run` prints its progress first
    assert code == 2 and lines[-1].startswith("error: ") and expected in lines[-1], (code, err)
    assert not [line for line in lines[:-1] if "error" in line.lower()], err


@pytest.mark.parametrize("command", [("report",), ("export", "--to", "OUT"), ("run", "sst2")], ids=str)
def test_a_store_that_is_not_a_database_is_one_error_line(bench: Any, tiny_model: Any, data_dir: Path,
                                                           tmp_path: Path, command: tuple[str, ...]) -> None:
    results = tmp_path / "results"
    results.mkdir()
    garbage = bytes(range(256)) * 20
    (results / "bench.sqlite").write_bytes(garbage)
    command = tuple(str(tmp_path / "out") if part == "OUT" else part for part in command)
    extra = ("--models", tiny_model("gpt2"), "--data-dir", data_dir, *FAST) if command[0] == "run" else ()
    _one_error_line(bench(*command, "--results", results, *extra), "is not a database")
    assert (results / "bench.sqlite").read_bytes() == garbage
    assert not (results / "runs").exists() and not (tmp_path / "out").exists()


def test_a_store_bug_is_not_blamed_on_the_store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrong SQL while opening the store (a migration bug) is bench's fault: it must keep its
    traceback, not tell the user to move a good store aside."""
    from harness.store import Store

    def broken_migration(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE stages ADD COLUMN stage TEXT")  # a column it already has

    monkeypatch.setattr(Store, "_migrate", staticmethod(broken_migration))
    with pytest.raises(sqlite3.OperationalError, match="duplicate column"):
        Store(tmp_path / "results").runs()


def test_disk_full_while_writing_a_report_is_one_error_line(bench: Any, store: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def full(source: Any, target: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    out = tmp_path / "report.md"
    monkeypatch.setattr(os, "replace", full)
    _one_error_line(bench("report", "--results", store, "--out", out), f"No space left on device: {out}")
    assert list(tmp_path.iterdir()) == []  # neither the report nor its temp file


def test_report_out_to_a_folder_is_one_error_line(bench: Any, store: Path, tmp_path: Path) -> None:
    _one_error_line(bench("report", "--results", store, "--out", tmp_path), str(tmp_path))


def _bad_sql(path: Path) -> None:
    sqlite3.connect(":memory:").execute("SELECT no_such_column FROM sqlite_master")


def _missing_file(path: Path) -> None:
    (path / "no-such-file.json").read_text()


def _read_only_store(path: Path) -> None:
    sqlite3.connect(path / "db.sqlite").execute("CREATE TABLE t (x)").connection.close()
    sqlite3.connect(f"file:{path / 'db.sqlite'}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)")


def _results_is_a_file(path: Path) -> None:  # --results naming a file: Store's mkdir
    (path / "results").touch()
    (path / "results").mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("fault, expected", [
    (_bad_sql, None), (_missing_file, None),
    (_read_only_store, "error: results store: attempt to write a readonly database"),
    (_results_is_a_file, "error: File exists: "),
], ids=["sql-bug", "missing-file", "read-only-store", "results-is-a-file"])
def test_only_disk_and_store_failures_lose_their_traceback(fault: Any, expected: str | None, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A full or read-only disk, a file where a folder goes, is the user's to fix and gets one error:
    line; wrong SQL or a file bench itself expected is a bug, and main() must not hide its traceback."""
    import harness.commands.report

    monkeypatch.setattr(harness.commands.report, "run", lambda args: fault(tmp_path))
    if expected:
        assert main(["report"]) == 2
        assert capsys.readouterr().err.startswith(expected)
    else:
        with pytest.raises((sqlite3.OperationalError, FileNotFoundError)):
            main(["report"])


def test_disk_full_while_saving_the_checkpoint_leaves_no_half_checkpoint(bench: Any, tiny_model: Any, data_dir: Path,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from transformers import PreTrainedTokenizerBase

    def full(self: Any, folder: Any, *args: Any, **kwargs: Any) -> None:
        (Path(folder) / "tokenizer.json").write_text("{")  # a file begun, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    model = tiny_model("gpt2")  # built (and its tokenizer saved) before the disk fills
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
    results = tmp_path / "results"
    _one_error_line(bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results,
                          *FAST), "No space left on device")
    (run,) = (results / "runs").iterdir()
    assert not (run / "checkpoint.partial").exists() and not (run / "checkpoint").exists()
    with sqlite3.connect(results / "bench.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT stage FROM stages")] == ["baseline:prompt"]


def test_two_files_for_one_split_is_an_error_naming_them(bench: Any, tiny_model: Any, tmp_path: Path) -> None:
    """train.csv beside train.parquet: which one is the data is the user's call, not a silent pick."""
    data = _data(tmp_path, GOOD)
    GOOD.assign(label=[0] * 20).to_csv(data / "sst2" / "train.csv", index=False)
    results = tmp_path / "results"
    assert_clean_failure(bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data, "--results", results,
                               *FAST), "2 files for the 'train' split (train.parquet, train.csv)", results)
