"""`bench sweep`: a 2x2 grid on sst2 with a tiny model is four ordinary runs, a table, a heatmap and
an HTML report; the same command again redoes nothing; a bad grid is one `error:` line, exit 2,
and nothing written. Grid planning (task options, freeze=N, several models, >2 axes) is checked
without training."""
from __future__ import annotations

import csv
import importlib.util
import io
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from harness.options import GRID_EXTRAS, grid_axes  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.store import StageRecord  # noqa: E402
from harness.run.sweep import parse_grid, plan_sweep  # noqa: E402
from harness.report.sweep import heatmap, sweep_table  # noqa: E402
from harness.run.sweep_plan import Axis, Cell, CellResult, SweepPlan  # noqa: E402

SMALL = ("--train-samples", "16", "--eval-samples", "16", "--validation-samples", "8")
STAGES = ("baseline:prompt", "finetune", "finetuned")


def finished_at(results: Path) -> dict[tuple[str, str], float]:
    with sqlite3.connect(results / "bench.sqlite") as db:
        return {(r[0], r[1]): r[2] for r in db.execute("SELECT run_id, stage, finished_at FROM stages")}


def test_sweep_runs_every_cell_once_and_resumes(bench, data_dir, tiny_model, tmp_path):
    results = tmp_path / "results"
    model = tiny_model("gpt2")
    sweep = ("sweep", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *SMALL,
             "--grid", "lora_rank=2,4", "lr=1e-4,5e-5")
    code, out, err = bench(*sweep)
    assert code == 0, err
    stored = finished_at(results)
    run_ids = sorted({run_id for run_id, _ in stored})
    assert len(run_ids) == 4 and set(stored) == {(r, s) for r in run_ids for s in STAGES}

    # the table: one row per cell, in grid order, with the metric and the cost of each cell
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| lora_rank | lr | accuracy (fine-tuned) | Δ [95% CI] | p | p adj (holm) | train s | peak MB |")
    cells = [line.split(" | ")[:2] for line in table[1:]]
    assert cells == [["| 2", "0.0001"], ["| 2", "5e-05"], ["| 4", "0.0001"], ["| 4", "5e-05"]]
    assert all(run_id in out for run_id in run_ids)
    (name,) = [p.stem for p in (results / "sweeps").glob("*.json")]
    folder = results / "sweeps"
    assert (folder / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (folder / f"{name}.md").read_text().count("\n| ") == 5  # header + 4 cells
    rows = list(csv.DictReader(io.StringIO((folder / f"{name}.csv").read_text())))
    assert [(r["lora_rank"], float(r["lr"])) for r in rows] == [("2", 1e-4), ("2", 5e-5), ("4", 1e-4), ("4", 5e-5)]
    assert all(float(r["train_seconds"]) >= 0 and int(r["trainable_params"]) > 0 for r in rows)
    assert rows[0]["trainable_params"] != rows[2]["trainable_params"]  # rank 4 trains twice rank 2's adapters
    page = (results / "reports" / f"{name}.html").read_text()
    assert "<script" not in page and page.count('src="data:image/png;base64,') == 5  # heatmap + 4 curves
    assert "heatmap of sweep" in page

    # the same command again: every stage of every cell is skipped, nothing is trained or rewritten
    # (--log-to is not part of a run's config: with tensorboard installed, the re-run also logs every cell)
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    code, again, err = bench(*sweep, *(["--log-to", "tensorboard"] if tensorboard else []))
    assert code == 0, err
    assert err.count("complete in the store, skipped") == 4 * len(STAGES)
    assert "finetune ..." not in err and "step " not in err
    assert finished_at(results) == stored
    assert [line for line in again.splitlines() if line.startswith("| ")] == table
    if tensorboard:
        assert all(list((results / "tb" / run_id).glob("events.out.tfevents.*")) for run_id in run_ids)

    # a cell is an ordinary run: `bench run` with the cell's options finds it complete
    code, _, err = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *SMALL,
                         "--lora-rank", "4", "--lr", "5e-5")
    assert code == 0 and err.count("complete in the store, skipped") == len(STAGES), err

    # and the report rebuilds the sweep from its manifest and the store
    code, out, err = bench("report", "--results", results, "--sweep", name, "--format", "csv", "--table", "sweep")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 4

    # its before/after table tells the four cells apart by the settings that differ
    code, out, err = bench("report", "--results", results, "--sweep", name, "--format", "md")
    before_after = out.split("## Before / after fine-tuning")[1].split("## Per class")[0]
    settings = [line.split(" | ")[4] for line in before_after.splitlines() if line.startswith("| sst2 ")]
    assert code == 0 and settings == ["lora_rank=2, lr=0.0001", "lora_rank=2, lr=5e-05", "lora_rank=4, lr=0.0001",
                                      "lora_rank=4, lr=5e-05"], out


def assert_clean_failure(result: tuple[int, str, str], expected: str, results: Path) -> None:
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not results.exists()  # nothing written: no store, no manifest, no report


@pytest.mark.parametrize("grid, extra, expected", [
    (["lora_rank"], [], "--grid item 'lora_rank': expected KEY=V1,V2"),
    (["lora_rank="], [], "--grid item 'lora_rank=': empty value"),
    (["lora_rank=2,,4"], [], "--grid item 'lora_rank=2,,4': empty value"),
    (["colour=red,blue"], [], "--grid item 'colour=red,blue': unknown key 'colour'"),
    (["lora_rank=2,x"], [], "--grid item 'lora_rank=2,x': 'x' is not a valid int for lora_rank"),
    (["lr=fast"], [], "'fast' is not a valid float for lr"),
    (["lora_rank=2,2"], [], "a value is repeated"),
    (["freeze=0"], [], "freeze=N trains the last N blocks"),
    (["method=full", "freeze=1,2"], [], "method is already a grid axis"),
    (["lr=1e-4,5e-5"], ["--lr", "1e-3"], "--grid item 'lr=1e-4,5e-5': --lr is also given"),
    (["lr=1e-4,-1"], [], "sweep cell lr=-1: --lr must be positive"),
    (["method=lora,sideways"], [], "sweep cell method=sideways: unknown method 'sideways'"),
    (["labels=2,4"], [], "--grid labels=...: task 'sst2' takes no option labels"),
    (["lr=1e-4"], ["--metric", "bleu"], "--metric 'bleu': sst2 records accuracy"),
    (["lr=1e-4"], ["--log-to", "nothing"], "unknown --log-to 'nothing'"),
    # auto is lm for a causal model: two cells, one run, the same row twice in the table
    (["objective=auto,lm"], [], "sweep cells objective=auto and objective=lm are the same run"),
])
def test_invalid_grid_is_one_error_line_and_writes_nothing(bench, data_dir, tiny_model, tmp_path, grid, extra,
                                                           expected):
    results = tmp_path / "results"
    result = bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                   *SMALL, *extra, "--grid", *grid)
    assert_clean_failure(result, expected, results)


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_missing_logger_package_is_one_error_line(bench, data_dir, tiny_model, tmp_path, logger):
    if importlib.util.find_spec(logger) is not None:
        pytest.skip(f"{logger} is installed here")
    results = tmp_path / "results"
    result = bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                   "--log-to", logger, "--grid", "lr=1e-4")
    assert_clean_failure(result, f"--log-to {logger} needs the {logger} package: pip install {logger}", results)


def test_model_axis_and_models_option_conflict(bench, data_dir, tiny_model, tmp_path):
    results = tmp_path / "results"
    result = bench("sweep", "sst2", "--models", tiny_model("gpt2"), "--data-dir", data_dir, "--results", results,
                   "--grid", f"model={tiny_model('gpt2')}")
    assert_clean_failure(result, "--models is also given", results)


def test_goemotions_grid_plans_task_variants_and_sizes(tiny_model):
    """labels=2,4 builds a TaskSpec per cell, train_samples varies the config; four distinct runs."""
    axes = parse_grid(["labels=2,4", "train_samples=800,1600"], grid_axes(), {})
    plan, planned = plan_sweep("goemotions", axes, models=[str(tiny_model("gpt2"))], overrides={},
                               task_options={}, preset="quick", metric=None)
    assert [item.spec.key for item in planned] == ["goemotions-2labels"] * 2 + ["goemotions-4labels"] * 2
    assert [item.run.config.train_samples for item in planned] == [800, 1600, 800, 1600]
    assert [dict(item.run.config.task_options) for item in planned] == [{"labels": 2}] * 2 + [{"labels": 4}] * 2
    assert len({cell.run_id for cell in plan.cells}) == 4
    assert all(cell.run_id.startswith("goemotions-") for cell in plan.cells)
    assert plan.name.startswith("sweep__goemotions__")
    assert SweepPlan.from_json(plan.to_json()) == plan  # the manifest round-trips
    by_f1, _ = plan_sweep("goemotions", axes, models=[str(tiny_model("gpt2"))], overrides={}, task_options={},
                          preset="quick", metric="f1_macro")
    assert by_f1.name != plan.name  # another metric, another table and heatmap: not the same files
    with pytest.raises(BenchError, match="sweep cell labels=3: goemotions --labels must be one of"):
        plan_sweep("goemotions", parse_grid(["labels=2,3"], grid_axes(), {}), models=[str(tiny_model("gpt2"))],
                   overrides={}, task_options={}, preset="quick", metric=None)


def test_freeze_shorthand_and_several_models_become_axes(tiny_model, tmp_path):
    (tmp_path / "other").symlink_to(tiny_model("gpt2"))  # a second model name, no second model to build
    models = [str(tiny_model("gpt2")), str(tmp_path / "other")]
    plan, planned = plan_sweep("sst2", parse_grid(["freeze=1,2"], grid_axes(), {}), models=models, overrides={},
                               task_options={}, preset="quick", metric="delta")
    assert [a.key for a in plan.axes] == ["freeze", "model"]  # the grid's axes first: they head the heatmap
    assert [item.run.config.method for item in planned] == ["freeze:1", "freeze:1", "freeze:2", "freeze:2"]
    assert [item.run.config.model for item in planned] == models * 2


def test_grid_keys_are_the_run_options_with_their_types():
    types = grid_axes()
    assert {"lora_rank", "lora_alpha", "lr", "batch_size", "optimizer", "warmup_ratio", "schedule", "max_length",
            "train_samples", "epochs", "method", "labels", "seed"} <= set(types)
    assert set(GRID_EXTRAS) <= set(types) and "lora_targets" not in types and "results" not in types
    assert types["lora_rank"]("8") == 8 and types["lr"]("5e-5") == 5e-5 and types["epochs"]("2") == 2.0
    # An on/off option is a real boolean: "off" must not become the (truthy) string "off".
    assert types["compile"]("off") is False and types["compile"]("True") is True
    with pytest.raises(ValueError):
        types["compile"]("maybe")


def test_more_than_two_axes_lists_every_cell_and_heatmaps_the_first_two():
    axes = (Axis("lora_rank", (2, 4)), Axis("lr", (1e-4, 5e-5)), Axis("seed", (0, 1)))
    results = []
    for number, (rank, lr, seed) in enumerate([(r, lr, s) for r in (2, 4) for lr in (1e-4, 5e-5) for s in (0, 1)]):
        cell = Cell((("lora_rank", rank), ("lr", lr), ("seed", seed)), f"run{number}")
        if number == 7:
            results.append(CellResult(cell, error="loss became nan"))
            continue
        record = StageRecord(cell.run_id, "finetuned", 1.0, {"headline": "accuracy",
                                                             "accuracy": {"value": number / 10}}, {})
        row = SimpleNamespace(headline="accuracy")  # the heatmap reads only the headline name from the row
        results.append(CellResult(cell, {"finetuned": record}, (row,)))
    plan = SweepPlan("sweep__x", "sst2", axes, tuple(r.cell for r in results))
    png, caption = heatmap(plan, results)
    assert png.startswith(b"\x89PNG") and caption.startswith("accuracy (fine-tuned) by lora_rank × lr")
    assert "each heatmap cell is the mean over seed" in caption
    assert len(sweep_table(plan, [r for r in results if r.error]).rows) == 1
    assert sweep_table(plan, results[7:]).rows[0][-1] == "failed: loss became nan"


def test_a_failed_cell_keeps_its_reason_in_later_reports(tmp_path):
    from harness.store import Store
    from harness.run.sweep import results_from_store

    cells = (Cell((("lr", 1e30),), "run_a"), Cell((("lr", 1e-4),), "run_b"))
    plan = SweepPlan("sweep__x", "sst2", (Axis("lr", (1e30, 1e-4)),), cells,
                     failures={"run_a": "training loss became nan at step 1"})
    again = SweepPlan.from_json(plan.to_json())
    assert again == plan
    store = Store(tmp_path / "results")
    try:
        errors = [result.error for result in results_from_store(store, again)]
    finally:
        store.close()
    assert errors == ["training loss became nan at step 1", "not complete in the store (re-run the sweep to finish it)"]


def test_a_perplexity_sweep_names_its_delta_nll_and_wide_scores_keep_one_decimal():
    """The before/after table and the leaderboard say a perplexity delta is one of NLL per token;
    the sweep table beside the perplexity column must too (-0.024 is not a perplexity change)."""
    from harness.compare.paired import RunCosts, TextComparison
    from harness.report.sweep import sweep_csv

    costs = RunCosts(1.0, 10, 1000, 10, 1.0, 2.0, 1.0, 50.0, 700.0)

    def cell(metric: str, key: str, after: float, delta: float, ci: tuple[float, float]) -> tuple[SweepPlan, list]:
        row = TextComparison("run_a", "t", "m", "lora", "prompt 0-shot", 8, 0, 0, metric, after + 10, (0.0, 1.0),
                             after, (0.0, 1.0), key, delta, ci, 0.001, metric == "perplexity", {}, costs)
        record = StageRecord("run_a", "finetuned", 1.0, {"headline": metric, metric: {"value": after}}, {})
        plan = SweepPlan("sweep__x", "t", (Axis("lr", (1e-3,)),), (Cell((("lr", 1e-3),), "run_a"),))
        return plan, [CellResult(plan.cells[0], {"finetuned": record}, (row,))]

    plan, results = cell("perplexity", "nll", 782.05, -0.0243, (-0.031, -0.019))
    table = sweep_table(plan, results)
    assert table.columns[1:3] == ("perplexity (fine-tuned)", "Δ nll [95% CI]")
    assert table.rows[0][1:3] == ("782.0500", "-0.024 [-0.031, -0.019]")
    (row,) = csv.DictReader(io.StringIO(sweep_csv(plan, results)))
    assert row["delta_metric"] == "nll" and float(row["delta"]) == -0.0243

    plan, results = cell("f1", "f1", 52.0, 46.617, (35.522, 57.062))  # SQuAD F1, 0-100
    table = sweep_table(plan, results)
    assert table.columns[2] == "Δ [95% CI]" and table.rows[0][2] == "+46.6 [+35.5, +57.1]"


def test_a_sweep_with_two_baselines_says_which_one_its_delta_is_against():
    """--baseline prompt,head gives each cell two comparisons; the table shows the first's delta and
    must say so (a head baseline near chance and a prompt baseline give very different deltas)."""
    from harness.compare.paired import RunCosts, TextComparison
    from harness.report.sweep import sweep_csv

    costs = RunCosts(1.0, 10, 1000, 10, 1.0, 2.0, 1.0, 50.0, 700.0)
    rows = tuple(TextComparison("run_a", "t", "m", "lora", baseline, 8, 0, 0, "f1", before, (0.0, 1.0), 60.0,
                                (0.0, 1.0), "f1", 60.0 - before, (1.0, 2.0), 0.01, False, {}, costs)
                 for baseline, before in (("prompt 0-shot", 40.0), ("head", 10.0)))
    record = StageRecord("run_a", "finetuned", 1.0, {"headline": "f1", "f1": {"value": 60.0}}, {})
    plan = SweepPlan("sweep__x", "t", (Axis("lr", (1e-3,)),), (Cell((("lr", 1e-3),), "run_a"),))
    results = [CellResult(plan.cells[0], {"finetuned": record}, rows)]
    table = sweep_table(plan, results)
    assert table.columns[2] == "Δ vs prompt 0-shot [95% CI]" and table.rows[0][2].startswith("+20.0")
    (row,) = csv.DictReader(io.StringIO(sweep_csv(plan, results)))
    assert row["baseline"] == "prompt 0-shot" and float(row["delta"]) == 20.0


def test_a_perplexity_heatmap_says_lower_is_better():
    """viridis paints the highest value brightest; for perplexity that is the worst cell, and the
    heatmap's title, colour bar and caption did not say which way is good (the leaderboard does)."""
    from harness.compare.paired import RunCosts, TextComparison

    costs = RunCosts(1.0, 10, 1000, 10, 1.0, 2.0, 1.0, 50.0, 700.0)
    plan = SweepPlan("sweep__x", "t", (Axis("lr", (1e-3, 1e-2)),),
                     tuple(Cell((("lr", lr),), f"run_{i}") for i, lr in enumerate((1e-3, 1e-2))))

    def results(metric: str) -> list:
        cells = []
        for i, cell in enumerate(plan.cells):
            after = 780.0 + i
            row = TextComparison(cell.run_id, "t", "m", "lora", "prompt 0-shot", 8, 0, 0, metric, after + 10,
                                 (0.0, 1.0), after, (0.0, 1.0), "nll" if metric == "perplexity" else metric, -0.02,
                                 (-0.03, -0.01), 0.001, metric == "perplexity", {}, costs)
            record = StageRecord(cell.run_id, "finetuned", 1.0, {"headline": metric, metric: {"value": after}}, {})
            cells.append(CellResult(cell, {"finetuned": record}, (row,)))
        return cells

    png, caption = heatmap(plan, results("perplexity"))
    assert png.startswith(b"\x89PNG") and "lower is better" in caption
    assert "lower is better" not in heatmap(plan, results("rougeL"))[1]


def test_seed_axes_get_a_mean_and_sd_per_setting_and_stay_off_the_heatmap_axes():
    """A seed axis repeats a setting: the sweep pools it (sample sd, the spread a new seed would
    show) and plots the settings, even when the seed axis comes first in the grid."""
    from harness.compare.paired import RunCosts, TextComparison
    from harness.report.formats import to_markdown
    from harness.report.sweep import over_seeds_table, sweep_markdown

    costs = RunCosts(1.0, 10, 1000, 10, 1.0, 2.0, 1.0, 50.0, 700.0)
    axes = (Axis("train_seed", (0, 1, 2)), Axis("lr", (1e-3, 1e-4)))
    scores = {(0, 1e-3): 0.80, (1, 1e-3): 0.84, (2, 1e-3): 0.88, (0, 1e-4): 0.70, (1, 1e-4): 0.72}
    results = []
    for seed in axes[0].values:
        for lr in axes[1].values:
            cell = Cell((("train_seed", seed), ("lr", lr)), f"run_{seed}_{lr}")
            if (seed, lr) not in scores:
                results.append(CellResult(cell, error="loss became nan"))
                continue
            after = scores[(seed, lr)]
            row = TextComparison(cell.run_id, "t", "m", "lora", "prompt 0-shot", 8, 0, 0, "rougeL", 0.5, (0.0, 1.0),
                                 after, (0.0, 1.0), "rougeL", after - 0.5, (0.0, 1.0), 0.01, False, {}, costs)
            record = StageRecord(cell.run_id, "finetuned", 1.0, {"headline": "rougeL", "rougeL": {"value": after}}, {})
            results.append(CellResult(cell, {"finetuned": record}, (row,)))
    plan = SweepPlan("sweep__x", "t", axes, tuple(r.cell for r in results))
    table = over_seeds_table(plan, results)
    assert table is not None
    assert table.columns == ("lr", "seeds", "rougeL (fine-tuned) mean ± sd", "min – max", "Δ mean ± sd")
    # lr 1e-3: mean 0.84, sample sd sqrt((0.04² + 0 + 0.04²) / 2) = 0.04; lr 1e-4: two seeds, one failed
    assert table.rows == (("0.001", "3", "0.8400 ± 0.0400", "0.8000 – 0.8800", "+0.340 ± 0.040"),
                          ("0.0001", "2 (1 failed)", "0.7100 ± 0.0141", "0.7000 – 0.7200", "+0.210 ± 0.014"))
    assert to_markdown(table) in sweep_markdown(sweep_table(plan, results), table)
    _, caption = heatmap(plan, results)
    assert caption.startswith("rougeL (fine-tuned) by lr × train_seed")
    assert over_seeds_table(SweepPlan("sweep__y", "t", axes[1:], ()), []) is None  # no seed axis, no pooling


def test_train_seed_varies_training_on_the_same_data(bench, data_dir, tiny_model, tmp_path):
    """--train-seed changes what training draws and nothing else: both runs score the same eval
    examples with the same baseline, and --train-seed equal to --seed is the plain run."""
    results = tmp_path / "results"
    model = tiny_model("gpt2")
    code, out, err = bench("sweep", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *SMALL,
                           "--lr", "1e-2", "--grid", "train_seed=0,1")
    assert code == 0, err
    assert "Over seeds: mean ± sd (sample sd) per setting" in out and "| 2 | " in out
    with sqlite3.connect(results / "bench.sqlite") as db:
        runs = dict(db.execute("SELECT json_extract(config, '$.train_seed'), run_id FROM runs").fetchall())
        assert set(runs) == {None, 1}  # train_seed 0 is --seed 0 spelled out: recorded as the default

        def column(run_id: str, stage: str, what: str) -> list:
            return [r[0] for r in db.execute(f"SELECT {what} FROM predictions WHERE run_id=? AND stage=? ORDER BY idx",
                                             (run_id, stage))]

        assert column(runs[None], "baseline:prompt", "example_id") == column(runs[1], "baseline:prompt", "example_id")
        assert column(runs[None], "baseline:prompt", "scores") == column(runs[1], "baseline:prompt", "scores")
        assert column(runs[None], "finetuned", "scores") != column(runs[1], "finetuned", "scores")
    code, out, err = bench("run", "sst2", "--models", model, "--data-dir", data_dir, "--results", results, *SMALL,
                           "--lr", "1e-2", "--train-seed", "0")
    assert code == 0 and f"run {runs[None]}" in err + out and "finetune ..." not in err + out
