"""Runs stored before the issue-21 redesign still report, export, compare, rescore and resume.

tests/fixtures/store_v0 was written by commit 0e6d694 (tests/fixtures/make_store_v0.py): three
complete runs (sst2 LoRA with a prompt baseline, samsum generation, squad_v2 span QA) and one sst2
run killed as its fine-tuning began. Its golden/ files are that code's own outputs over the store,
so each test here fails when the store's format or a command's output drifts from it."""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STORE = FIXTURES / "store_v0"
GOLDEN = STORE / "golden"
sys.path.insert(0, str(FIXTURES))
from make_store_v0 import RUNS  # noqa: E402

Bench = Callable[..., tuple[int, str, str]]
RESULTS = ("--results", "results")
INTERRUPTED = "sst2__tiny-gpt2__full__25e281612d"
SST2 = "sst2__tiny-gpt2__lora__94f1e86b77"
SAMSUM = "samsum__tiny-gpt2__lora__c6999c7de0"
SQUAD = "squad_v2__tiny-bert__lora__c15326cf1d"


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture's data/ and results/ as the working directory (its paths are relative)."""
    work = tmp_path / "work"
    shutil.copytree(STORE / "data", work / "data")
    shutil.copytree(STORE / "results", work / "results")
    monkeypatch.chdir(work)
    return work


def stored_scores(results: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        stages = db.execute("SELECT run_id, stage, metrics FROM stages ORDER BY 1, 2").fetchall()
        values = db.execute("SELECT run_id, stage, idx, example_id, gold, label, scores, output, metric_values "
                            "FROM predictions ORDER BY 1, 2, 3").fetchall()
    return {"stages": stages, "predictions": values}


def without_wall_time(text: str) -> str:
    return re.sub(r"wall time \d+\.\d s", "wall time ? s", text)


def test_the_fixture_holds_the_runs_the_tests_name(old_store: Path) -> None:
    with sqlite3.connect(old_store / "results" / "bench.sqlite") as db:  # a copy: reading leaves -shm files
        stages = db.execute("SELECT run_id, stage FROM stages ORDER BY 1, 2").fetchall()
    assert stages == [(SAMSUM, "baseline:prompt"), (SAMSUM, "finetune"), (SAMSUM, "finetuned"),
                      (SQUAD, "baseline:head"), (SQUAD, "finetune"), (SQUAD, "finetuned"),
                      (INTERRUPTED, "baseline:prompt"),
                      (SST2, "baseline:prompt"), (SST2, "finetune"), (SST2, "finetuned")]


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_report_is_byte_identical_to_the_old_codes(bench: Bench, old_store: Path, fmt: str) -> None:
    code, out, err = bench("report", "--format", fmt, *RESULTS)
    assert code == 0, err
    assert out.encode() == (GOLDEN / f"report.{fmt}").read_bytes()


def test_compare_of_two_stored_stages_is_the_old_codes(bench: Bench, old_store: Path) -> None:
    code, out, err = bench("compare", f"{SST2}:baseline-prompt", SST2, "--format", "md", *RESULTS)
    assert code == 0, err
    assert out.encode() == (GOLDEN / "compare.md").read_bytes()


def test_export_writes_the_old_codes_files(bench: Bench, old_store: Path) -> None:
    code, _, err = bench("export", *RESULTS, "--to", "export")
    assert code == 0, err
    written = sorted(path.name for path in (old_store / "export").iterdir())
    assert written == sorted(path.name for path in (GOLDEN / "export").iterdir())
    for name in written:
        assert (old_store / "export" / name).read_bytes() == (GOLDEN / "export" / name).read_bytes(), name


@pytest.mark.parametrize("run_id, golden", [(SST2, "rescore_sst2.txt"), (SAMSUM, "rescore_samsum.txt"),
                                            (SQUAD, "rescore_squad_v2.txt")])
def test_rescore_prints_the_old_table_and_leaves_the_metrics_equal(bench: Bench, old_store: Path, run_id: str,
                                                                   golden: str) -> None:
    before = stored_scores(old_store / "results")
    code, out, err = bench("rescore", run_id, "--data-dir", "data", *RESULTS)
    assert code == 0, err
    assert without_wall_time(out) == without_wall_time((GOLDEN / golden).read_bytes().decode())
    assert stored_scores(old_store / "results") == before  # as the old code's rescore left them


def test_the_interrupted_run_resumes_after_its_stored_baseline(bench: Bench, old_store: Path,
                                                                tiny_model: Callable[[str], Path]) -> None:
    shutil.copytree(tiny_model("gpt2"), old_store / "tiny-gpt2")  # rebuilt: the same weights as the fixture's
    before = stored_scores(old_store / "results")
    code, out, err = bench(*RUNS["interrupted"])  # the command that was killed
    assert code == 0, err
    assert f"run {INTERRUPTED}" in err
    assert "baseline:prompt: complete in the store, skipped" in err
    after = stored_scores(old_store / "results")
    stored_baseline = [row for row in before["predictions"] if row[:2] == (INTERRUPTED, "baseline:prompt")]
    assert len(stored_baseline) == 12
    assert [row for row in after["predictions"] if row[:2] == (INTERRUPTED, "baseline:prompt")] == stored_baseline
    assert [row for row in after["stages"] if row[:2] == (INTERRUPTED, "baseline:prompt")] == \
        [row for row in before["stages"] if row[:2] == (INTERRUPTED, "baseline:prompt")]
    assert {(run, stage) for run, stage, _ in after["stages"] if run == INTERRUPTED} == \
        {(INTERRUPTED, "baseline:prompt"), (INTERRUPTED, "finetune"), (INTERRUPTED, "finetuned")}
    assert [row for row in after["stages"] if row[0] != INTERRUPTED] == \
        [row for row in before["stages"] if row[0] != INTERRUPTED]
    checkpoint = json.loads((old_store / "results" / "runs" / INTERRUPTED / "checkpoint" / "bench_checkpoint.json")
                            .read_text())
    assert (checkpoint["task"], checkpoint["method"]) == ("sst2", "full")

    code, report, err = bench("report", "--format", "md", "--task", "sst2", *RESULTS)
    assert code == 0, err
    assert "| sst2 | ./tiny-gpt2 | full | prompt 0-shot | 12 |" in report
    assert "| sst2 | ./tiny-gpt2 | lora | prompt 0-shot | 12 |" in report
    code, out, err = bench(*RUNS["interrupted"])  # now complete: every stage skipped
    assert code == 0, err
    assert "finetuned: complete in the store, skipped" in err
    assert stored_scores(old_store / "results") == after


@pytest.mark.parametrize("run_id, task", [(SST2, ("sst2",)), (SAMSUM, ("samsum",)),
                                          (SQUAD, ("squad_v2", "--mode", "span"))])
def test_a_stored_checkpoint_evaluates_to_its_stored_predictions(bench: Bench, old_store: Path,
                                                                 tiny_model: Callable[[str], Path],
                                                                 run_id: str, task: tuple[str, ...]) -> None:
    """bench_checkpoint.json names its kind by the old class name (Classify, Generate, ExtractiveQA):
    the checkpoint must still load as that kind and predict what its run stored. The base models are
    rebuilt (same weights); the checkpoint brings its own tokenizer."""
    family = "bert" if run_id == SQUAD else "gpt2"
    shutil.copytree(tiny_model(family), old_store / f"tiny-{family}")
    checkpoint = f"results/runs/{run_id}/checkpoint"
    code, _, err = bench("eval", *task, "--model", checkpoint, "--data-dir", "data", "--quiet", *RESULTS)
    assert code == 0, err
    with sqlite3.connect(old_store / "results" / "bench.sqlite") as db:
        (eval_id,) = db.execute("SELECT run_id FROM runs WHERE run_id LIKE 'eval__%'").fetchone()
        query = "SELECT example_id, gold, label, output FROM predictions WHERE run_id = ? AND stage = ? ORDER BY idx"
        stored = db.execute(query, (run_id, "finetuned")).fetchall()
        (eval_stage,) = db.execute("SELECT DISTINCT stage FROM predictions WHERE run_id = ?", (eval_id,)).fetchone()
        evaluated = db.execute(query, (eval_id, eval_stage)).fetchall()
    assert stored and evaluated == stored
