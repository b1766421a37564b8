"""lm-evaluation-harness both ways: `bench run --lm-eval` (lm-eval tasks before and after fine-tuning,
paired per document) and `bench export-task` (a bench task as an lm-eval YAML that reproduces bench's
baseline). Tiny gpt2, 20 real SST-2 rows, a local-file lm-eval task: offline throughout."""
from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from harness.cli import main  # noqa: E402

ROWS = 20
SMALL = ("--train-samples", "24", "--eval-samples", str(ROWS), "--validation-samples", "8", "--eval-batch-size", "8",
         "--batch-size", "8", "--max-length", "96")
TASK_YAML = """task: mytask
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{sentence}}}}\\nThe review is"
doc_to_choice: [" bad", " good"]
target_delimiter: ""
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def write_task(folder: Path, data_dir: Path, data_name: str = "rows.jsonl") -> Path:
    """A local lm-eval task over the first 20 rows of SST-2's validation parquet."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.read_parquet(data_dir / "sst2" / "validation.parquet").head(ROWS).to_json(folder / "rows.jsonl",
                                                                                 orient="records", lines=True)
    (folder / "mytask.yaml").write_text(TASK_YAML.format(data=json.dumps(str(folder / data_name))))
    return folder


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory, tiny_model, data_dir: Path) -> dict:
    """One `bench run sst2 --lm-eval mytask` on tiny gpt2, shared by the tests below."""
    import os

    root = tmp_path_factory.mktemp("lm-eval-run")
    tasks = write_task(root / "tasks", data_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = ["run", "sst2", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir), "--results",
            str(root / "results"), *SMALL, "--lm-eval", "mytask", "--lm-eval-include", str(tasks),
            "--max-length", "400"]  # no SST-2 prompt reaches it: bench clips longer ones, lm-eval does not
    assert main(args) == 0
    return {"results": root / "results", "args": args, "model": tiny_model("gpt2"), "tasks": tasks}


def stored(results: Path, stage: str) -> list[tuple[str, int, int | None, list[float], dict]]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = db.execute("SELECT example_id, gold, label, scores, metric_values FROM predictions WHERE stage=? "
                          "ORDER BY idx", (stage,)).fetchall()
    return [(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]) if r[4] else {}) for r in rows]


def test_lm_eval_stages_store_lm_evals_per_document_results(lm_run: dict) -> None:
    for which in ("baseline", "finetuned"):
        rows = stored(lm_run["results"], f"lmeval:mytask:{which}")
        assert [r[0] for r in rows] == [str(i) for i in range(ROWS)]  # lm-eval doc ids
        for _, gold, label, scores, values in rows:
            assert len(scores) == 2 and label == max(range(2), key=lambda k: scores[k])
            assert values["acc"] == float(label == gold)  # lm-eval's own per-document verdict


def test_run_table_has_a_paired_before_after_row_per_lm_eval_task(lm_run: dict) -> None:
    results = lm_run["results"]
    (table,) = (results / "tables").glob("sst2__*.md")
    text = table.read_text()
    assert "lm-eval task" in text
    (line,) = [row for row in text.splitlines() if "| mytask |" in row]
    before = [r[4]["acc"] for r in stored(results, "lmeval:mytask:baseline")]
    after = [r[4]["acc"] for r in stored(results, "lmeval:mytask:finetuned")]
    b = sum(1 for x, y in zip(before, after) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(before, after) if x == 0 and y == 1)
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4:6] == ["acc", str(ROWS)]
    assert cells[6].startswith(f"{sum(before) / ROWS:.3f}") and cells[7].startswith(f"{sum(after) / ROWS:.3f}")
    assert "McNemar" in cells and f"{b}/{c}" in cells


def test_lm_eval_rows_reach_reports_and_exports_but_not_the_leaderboard(lm_run: dict, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--to", str(tmp_path / "out"), "--results", str(lm_run["results"])]) == 0
    with open(tmp_path / "out" / "comparisons.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["lm_eval_task"] for row in rows] == ["", "mytask"]
    assert rows[1]["test"] == "McNemar" and int(rows[1]["n"]) == ROWS
    assert "mytask" not in (tmp_path / "out" / "leaderboard.csv").read_text()
    capsys.readouterr()
    assert main(["report", "--results", str(lm_run["results"]), "--format", "latex"]) == 0
    assert "mytask" in capsys.readouterr().out


def test_rerun_skips_the_stored_lm_eval_stages(lm_run: dict, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(lm_run["args"]) == 0
    err = capsys.readouterr().err
    assert "lmeval:mytask:baseline: complete in the store, skipped" in err
    assert "lmeval:mytask:finetuned: complete in the store, skipped" in err


def test_lm_eval_options_change_the_run_id_only_when_given(lm_run: dict) -> None:
    from harness.resolve import resolve
    from harness.task.registry import get_task

    spec = get_task("sst2")
    plain = resolve(spec, "gpt2", {})
    assert plain.digest() == "38749c20b3"  # the id every run without --lm-eval had before it existed
    assert resolve(spec, "gpt2", {"lm_eval": ("mytask",)}).digest() != plain.digest()
    (run_dir,) = (lm_run["results"] / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["lm_eval"] == ["mytask"]


def test_a_task_lm_eval_cannot_load_is_one_error_line_before_any_stage(bench, tiny_model, data_dir: Path,
                                                                        tmp_path: Path) -> None:
    tasks = write_task(tmp_path / "tasks", data_dir, data_name="missing.jsonl")
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                         tmp_path / "results", *SMALL, "--lm-eval", "mytask", "--lm-eval-include", tasks)
    assert code == 2
    assert err.startswith("error: --lm-eval mytask: lm-eval cannot load this task") and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_lm_eval_limit_without_tasks_is_an_error(bench, tiny_model, data_dir: Path, tmp_path: Path) -> None:
    code, _, err = bench("run", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results",
                         tmp_path / "results", "--lm-eval-limit", "5")
    assert code == 2 and err.startswith("error: --lm-eval-limit applies to the tasks of --lm-eval")
    assert not (tmp_path / "results").exists()


def test_exported_task_gives_bench_baseline_predictions_in_lm_eval(lm_run: dict, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.backends.models import load_lm, load_tokenizer, resolve_model

    out = tmp_path / "exported"
    assert main(["export-task", "sst2", "--to", str(out), "--data-dir", str(data_dir), *SMALL[:6]]) == 0
    ids = [json.loads(line)["id"] for line in (out / "bench_sst2.jsonl").read_text().splitlines()]
    bench_rows = stored(lm_run["results"], "baseline:prompt")
    assert ids == [r[0] for r in bench_rows]  # the same examples, in bench's order

    ref = resolve_model(str(lm_run["model"]))
    lm = HFLM(pretrained=load_lm(ref), tokenizer=load_tokenizer(ref), batch_size=8, device="cpu")
    results = simple_evaluate(model=lm, tasks=["bench_sst2"], bootstrap_iters=0, log_samples=True,
                              task_manager=TaskManager(include_path=str(out), include_defaults=False))
    samples = sorted(results["samples"]["bench_sst2"], key=lambda s: s["doc_id"])
    lm_eval_labels = [max(range(2), key=lambda k: s["filtered_resps"][k][0]) for s in samples]
    assert lm_eval_labels == [r[2] for r in bench_rows]
    for sample, row in zip(samples, bench_rows):
        assert [ll for ll, _ in sample["filtered_resps"]] == pytest.approx(row[3], abs=1e-3)
    bench_accuracy = sum(r[1] == r[2] for r in bench_rows) / ROWS
    assert results["results"]["bench_sst2"]["acc,none"] == pytest.approx(bench_accuracy)


def test_export_task_refuses_a_text_task(bench, tmp_path: Path) -> None:
    code, _, err = bench("export-task", "samsum", "--to", tmp_path / "out")
    assert code == 2 and "text task" in err
    assert not (tmp_path / "out").exists()


def test_rescore_keeps_the_lm_eval_stages_and_their_rows(lm_run: dict, data_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir,) = (lm_run["results"] / "runs").iterdir()
    before = stored(lm_run["results"], "lmeval:mytask:finetuned")
    assert main(["rescore", run_dir.name, "--results", str(lm_run["results"]), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "| mytask |" in out
    assert stored(lm_run["results"], "lmeval:mytask:finetuned") == before
