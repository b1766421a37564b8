"""`bench sweep TASK --models M --grid lora_rank=2,4 lr=1e-4,5e-5`: a grid of ordinary runs, then
one table and one heatmap of a chosen metric with the cost of every cell.

Each cell is planned and run exactly as `bench run` plans and runs it (`pipeline.plan` + `Runner`),
so it is an ordinary run in the store under the same run id the equivalent `bench run` command
would get. Resuming is therefore the runs' own: re-running the same sweep skips every stage that
is complete, an interrupted sweep continues in the cell it stopped in, and a cell that matches an
earlier `bench run` reuses it. The whole grid (syntax, keys, value types, every cell's config,
the data) is validated before the first cell runs; an invalid grid writes nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.compare.paired import Comparison, TextComparison, compare
from harness.options import TASK_OPTIONS, recorded_task_options
from harness.errors import BenchError, did_you_mean
from harness.progress import progress
from harness.report.tables import OVER_SEEDS_TITLE, Table, count_label, show
from harness.store import StageRecord, Store

if TYPE_CHECKING:
    from harness.report.html import SweepSection
    from harness.run.runner import PlannedRun, Runner
    from harness.task.spec import TaskSpec

Row = Comparison | TextComparison
Converter = Callable[[str], Any]
Log = Callable[[str], None]
AfterRun = Callable[[str, dict[str, Any], dict[str, StageRecord]], None]
SPECIAL_METRICS = ("delta", "before")  # besides the fine-tuned stage's own metric names
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")
# Axes whose values repeat one setting rather than change it: the sweep pools over them (mean ± sd)
# and keeps them off the heatmap's two axes.
REPLICATE_AXES = ("seed", "train_seed")


@dataclass(frozen=True)
class Axis:
    key: str  # a run option (lora_rank, lr, method, ...), a task option (labels), `model` or `freeze`
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    values: tuple[tuple[str, Any], ...]  # (axis key, value) in axis order
    run_id: str

    @property
    def label(self) -> str:
        return " ".join(f"{key}={show(value)}" for key, value in self.values)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep is, independent of its results: saved as a manifest next to its outputs so
    `bench report --sweep NAME` can rebuild the table and heatmap from the store later."""

    name: str
    task: str
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    metric: str | None = None
    # run id -> why that cell failed in the last sweep that ran it (a diverged loss does not
    # become "incomplete" in a later report)
    failures: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "task": self.task, "metric": self.metric, "failures": self.failures,
                           "axes": [{"key": a.key, "values": list(a.values)} for a in self.axes],
                           "cells": [{"values": [list(pair) for pair in c.values], "run_id": c.run_id}
                                     for c in self.cells]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SweepPlan:
        data = json.loads(text)
        return cls(data["name"], data["task"], tuple(Axis(a["key"], tuple(a["values"])) for a in data["axes"]),
                   tuple(Cell(tuple((k, v) for k, v in c["values"]), c["run_id"]) for c in data["cells"]),
                   data.get("metric"), dict(data.get("failures") or {}))


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    spec: TaskSpec
    run: PlannedRun


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    records: dict[str, StageRecord] = field(default_factory=dict)
    rows: tuple[Row, ...] = ()
    error: str = ""


# ---------------------------------------------------------------- grid syntax

def parse_grid(items: Sequence[str], types: Mapping[str, Converter], fixed: Mapping[str, Any],
               plugin_options: Sequence[str] = ()) -> tuple[Axis, ...]:
    """`KEY=V1,V2,...` items -> axes. `types` maps each allowed key to its value converter (the
    `run` command's own option types); `fixed` holds the options given explicitly, which a grid
    key may not also set; `plugin_options` are the task's own (given as --task-option KEY=VALUE).
    `freeze=1,2` is shorthand for `method=freeze:1,freeze:2`."""
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in items:
        key_text, sep, values_text = item.partition("=")
        key = key_text.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise BenchError(f"--grid item {item!r}: expected KEY=V1,V2,... (e.g. lora_rank=2,4,8)")
        if key not in types:
            raise BenchError(f"--grid item {item!r}: unknown key {key!r}{did_you_mean(key, types) or ';'} grid keys: "
                             f"{', '.join(sorted(types))}")
        raw = [value.strip() for value in values_text.split(",")]
        if any(not value for value in raw):
            raise BenchError(f"--grid item {item!r}: empty value; give KEY=V1,V2,... with no empty entries")
        convert = types[key]
        values = []
        for text in raw:
            try:
                values.append(convert(text))
            except (TypeError, ValueError):
                kind = getattr(convert, "__name__", "value")
                raise BenchError(f"--grid item {item!r}: {text!r} is not a valid {kind} for {key}") from None
        if len({repr(value) for value in values}) != len(values):
            raise BenchError(f"--grid item {item!r}: a value is repeated")
        if key == "freeze" and any(value < 1 for value in values):
            raise BenchError(f"--grid item {item!r}: freeze=N trains the last N blocks; N must be at least 1")
        target = "method" if key == "freeze" else key
        if target in seen:
            raise BenchError(f"--grid item {item!r}: {target} is already a grid axis (freeze=N is method=freeze:N)")
        option = "models" if target == "model" else target
        if fixed.get(option) is not None:
            flag = f"--task-option {option}" if option in plugin_options else f"--{option.replace('_', '-')}"
            raise BenchError(f"--grid item {item!r}: {flag} is also given; drop one")
        seen.add(target)
        axes.append(Axis(key, tuple(values)))
    if not axes:
        raise BenchError("--grid needs at least one KEY=V1,V2,... item")
    return tuple(axes)


# ---------------------------------------------------------------- planning

def plan_sweep(task: str, axes: Sequence[Axis], *, models: Sequence[str], overrides: Mapping[str, Any],
               task_options: Mapping[str, Any], preset: str, metric: str | None
               ) -> tuple[SweepPlan, list[PlannedCell]]:
    """Every cell resolved (task variant, model, config) before anything runs. Several --models
    and no model axis: the models become the last axis, so the grid's own axes head the heatmap."""
    from harness.run.runner import plan
    from harness.task.registry import get_task
    from harness.task.registry import task_options as declared_options

    declared = declared_options(task)  # an unknown task fails here, once
    axes = list(axes)
    keys = {axis.key for axis in axes}
    for axis in axes:
        if axis.key in TASK_OPTIONS and axis.key not in declared:
            raise BenchError(f"--grid {axis.key}=...: task {task!r} takes no option {axis.key}")
    if "model" not in keys:
        if not models:
            raise BenchError("no models given: pass --models A,B or a model=A,B grid axis")
        if len(models) > 1:
            axes.append(Axis("model", tuple(models)))
    planned = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        values = tuple(zip((axis.key for axis in axes), combination))
        cell_overrides, cell_options, model = dict(overrides), dict(task_options), models[0] if models else ""
        for key, value in values:
            if key == "model":
                model = value
            elif key == "freeze":
                cell_overrides["method"] = f"freeze:{value}"
            elif key in TASK_OPTIONS or key in declared:
                cell_options[key] = value
            else:
                cell_overrides[key] = value
        # recorded as `bench run` records them, so a cell has that run's id
        cell_overrides["task_options"] = recorded_task_options(cell_options)
        label = " ".join(f"{key}={show(value)}" for key, value in values)
        try:
            spec = get_task(task, **cell_options)
            (run,) = plan(spec, [model], cell_overrides, preset)
        except BenchError as exc:
            raise BenchError(f"sweep cell {label}: {exc}") from None
        planned.append(PlannedCell(Cell(values, run.run_id), spec, run))
    first: dict[str, Cell] = {}
    for item in planned:  # e.g. objective=auto,lm where auto is lm: one run, shown twice
        same = first.setdefault(item.cell.run_id, item.cell)
        if same is not item.cell:
            raise BenchError(f"sweep cells {same.label} and {item.cell.label} are the same run ({item.cell.run_id}): "
                             "those values resolve to the same settings; drop one of them")
    check_metric(planned[0].spec, metric)
    # The metric names the sweep too (its table and heatmap differ); None keeps earlier sweeps' names.
    identity = "|".join(item.cell.run_id for item in planned) + (f"|metric={metric}" if metric else "")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    name = f"sweep__{re.sub(r'[^A-Za-z0-9._-]+', '-', task)}__{digest}"
    return SweepPlan(name, task, tuple(axes), tuple(item.cell for item in planned), metric), planned


def metric_names(spec: TaskSpec) -> list[str]:
    """The metric names a fine-tuned stage of this task records with a value."""
    return spec.kind.metric_names(spec)


def check_metric(spec: TaskSpec, metric: str | None) -> None:
    if metric is None or metric in SPECIAL_METRICS:
        return
    names = metric_names(spec)
    if metric not in names:
        raise BenchError(f"--metric {metric!r}: {spec.key} records {', '.join(names)}; or delta (fine-tuned minus "
                         "baseline) or before (the baseline's headline)")


# ---------------------------------------------------------------- running

def prepare_runners(planned: Sequence[PlannedCell], store: Store, data_dir: Path | None, log: Log
                    ) -> dict[str, Runner]:
    """One Runner per task variant, with every cell's splits built: data problems surface before
    any model loads or anything is written, as in `bench run`."""
    from harness.run.runner import Runner

    runners: dict[str, Runner] = {}
    for item in planned:
        runners.setdefault(item.spec.key, Runner(item.spec, store, data_dir, log)).splits(item.run.config)
    return runners


def execute(planned: Sequence[PlannedCell], runners: Mapping[str, Runner], store: Store, log: Log,
            after_run: AfterRun | None = None) -> list[CellResult]:
    """Run every cell in grid order. A cell that fails at run time (e.g. the loss diverges at a
    large lr) is a result of the sweep, not the end of it: it is reported and the next cell runs.
    Ctrl-C stops the sweep; the cells and stages already complete stay in the store."""
    results = []
    with progress("sweep", total=len(planned), unit="cells") as bar:
        for number, item in enumerate(planned, 1):
            log(f"[cell {number}/{len(planned)}] {item.cell.label}")
            stored = complete_in_store(store, item.run)
            try:
                records = runners[item.spec.key].run(item.run)
            except BenchError as exc:
                log(f"  cell failed: {exc}")
                results.append(CellResult(item.cell, error=str(exc)))
                bar.advance(1, failed=sum(1 for r in results if r.error))
                continue
            config = item.run.config.to_dict()
            if after_run is not None:
                after_run(item.run.run_id, config, records)
            results.append(CellResult(item.cell, records, tuple(compare(store, item.run.run_id, config, records))))
            # cells found complete count towards the total but not the rate (the ETA is the cells run)
            (bar.skip if stored else bar.advance)(1)
            bar.set(skipped_as_complete=bar.skipped or None)
    return results


def complete_in_store(store: Store, run: PlannedRun) -> bool:
    """Every stage of `run` is in the store already (a re-run sweep skips it)."""
    from harness.artefacts import DamagedFile

    stages = [f"baseline:{name}" for name in run.baselines] + ["finetune", "finetuned"]
    try:
        return all(store.stage(run.run_id, stage) is not None for stage in stages)
    except DamagedFile:
        return False


def results_from_store(store: Store, plan: SweepPlan, rows: Sequence[Row] = ()) -> list[CellResult]:
    """The sweep's cells as the store has them now (for `bench report --sweep`). `rows`: comparisons
    the caller already made of some cells, reused (making them again repeated every paired bootstrap
    and prediction read: a sweep report took twice as long as a report of the same runs)."""
    made: dict[str, list[Row]] = {}
    for row in rows:
        made.setdefault(row.run_id, []).append(row)
    results = []
    for cell in plan.cells:
        stages = store.stages_of(cell.run_id)
        if "finetuned" not in stages:
            failed = plan.failures.get(cell.run_id)
            results.append(CellResult(cell, error=failed or "not complete in the store (re-run the sweep to finish it)"))
            continue
        records = {stage: store.stage(cell.run_id, stage) for stage in stages}
        if cell.run_id not in made:
            made[cell.run_id] = compare(store, cell.run_id, store.run_config(cell.run_id) or {}, records)
        results.append(CellResult(cell, records, tuple(made[cell.run_id])))
    return results


# ---------------------------------------------------------------- results

def first_row(results: Sequence[CellResult]) -> Comparison | TextComparison | None:
    """The first complete cell's comparison: what the sweep's labels and directions are read from."""
    return next((r.rows[0] for r in results if r.rows), None)


def metric_label(results: Sequence[CellResult], metric: str | None) -> str:
    first = first_row(results)
    if metric == "delta":  # perplexity's delta is one of NLL per token, as in the before/after table
        return "Δ " + (first.delta_name if first else "metric") + " (fine-tuned − baseline)"
    if metric == "before":
        return (first.headline if first else "metric") + " (baseline)"
    return (metric or (first.headline if first else "metric")) + " (fine-tuned)"


def lower_is_better(results: Sequence[CellResult], metric: str | None) -> bool:
    """Whether a smaller value of the plotted metric is the better one: the headline's own direction
    (perplexity; its delta, of NLL, too), or a loss-like metric chosen with --metric."""
    first = first_row(results)
    if metric in (None, "delta", "before") or (first is not None and metric == first.headline):
        return bool(getattr(first, "lower_is_better", False))
    return metric in ("perplexity", "loss", "nll")


def cell_metric(result: CellResult, metric: str | None) -> float | None:
    """The chosen metric of one cell: the fine-tuned headline by default, the paired delta or the
    baseline score (first baseline), or any metric the fine-tuned stage recorded."""
    if not result.rows:
        return None
    row = result.rows[0]
    if metric == "delta":
        return row.headline_delta
    if metric == "before":
        return row.headline_before
    after = result.records["finetuned"].metrics
    entry = after.get(metric or after.get("headline", "accuracy"))
    value = entry.get("value") if isinstance(entry, dict) else entry
    return float(value) if isinstance(value, (int, float)) else None


def delta_label(first: Comparison | TextComparison | None) -> str:
    """The delta columns' name: perplexity's delta is one of NLL per token (what is resampled), and
    says so, as the other tables do."""
    return f"Δ {first.delta_name}" if first and first.delta_name != first.headline else "Δ"


def sweep_table(plan: SweepPlan, results: Sequence[CellResult], adjust: str = "holm") -> Table:
    """Every cell, in grid order: its axis values, the metric, the paired delta (p, and p adjusted
    over the cells that finished), and its cost."""
    from harness.compare.paired import format_p
    from harness.report.tables import adjusted_column, format_delta
    from harness.compare.stats import adjust_p

    label = metric_label(results, plan.metric)
    first = first_row(results)
    delta = delta_label(first)
    if any(len(r.rows) > 1 for r in results):  # --baseline prompt,head: the delta is against the first
        delta += f" vs {first.baseline}"  # type: ignore[union-attr]
    delta += " [95% CI]"
    extra = (adjusted_column(adjust),) if adjust != "none" else ()
    columns = (*(axis.key for axis in plan.axes), label, delta, "p", *extra, "train s", "peak MB", "trainable", "run")
    adjusted = iter(adjust_p([r.rows[0].p_value for r in results if r.rows], adjust))
    rows = []
    for result in results:
        values = tuple(show(value) for _, value in result.cell.values)
        if not result.rows:
            rows.append((*values, "—", "—", "—", *("—" for _ in extra), "—", "—", "—", f"failed: {result.error}"))
            continue
        row = result.rows[0]
        value = cell_metric(result, plan.metric)
        rows.append((*values, "—" if value is None else f"{value:.4f}",
                     format_delta(row.headline_delta, row.delta_ci, row.delta_name),
                     format_p(row.p_value), *(format_p(next(adjusted)) for _ in extra),
                     f"{row.costs.train_seconds:.1f}", f"{row.costs.peak_memory_mb:.0f}",
                     f"{count_label(row.costs.trainable_params)} ({row.costs.trainable_pct:.2f}%)", result.cell.run_id))
    return Table(columns, tuple(rows))


def over_seeds_table(plan: SweepPlan, results: Sequence[CellResult]) -> Table | None:
    """Per setting (the values of the non-seed axes), the metric and the paired delta as mean ± sd
    over its seeds, and their range: one cell cannot tell a better setting from a lucky seed. None
    when the grid has no seed axis."""
    from harness.report.tables import on_wide_scale

    replicates = [axis for axis in plan.axes if axis.key in REPLICATE_AXES]
    if not replicates:
        return None
    settings = [axis for axis in plan.axes if axis.key not in REPLICATE_AXES]
    groups: dict[tuple[Any, ...], list[CellResult]] = {}
    for result in results:  # grid order: the settings come out in the order of their axes
        values = dict(result.cell.values)
        groups.setdefault(tuple(values[axis.key] for axis in settings), []).append(result)
    label, first = metric_label(results, plan.metric), first_row(results)
    columns = (*(axis.key for axis in settings), "seeds", f"{label} mean ± sd", "min – max",
               f"{delta_label(first)} mean ± sd")
    delta_format = "{:+.1f}" if first and on_wide_scale(first.delta_name) else "{:+.3f}"  # as in the table
    rows = []
    for key, group in groups.items():
        scores = [s for s in (cell_metric(result, plan.metric) for result in group) if s is not None]
        deltas = [result.rows[0].headline_delta for result in group if result.rows]
        failed = sum(1 for result in group if not result.rows)
        seeds = f"{len(scores)}" + (f" ({failed} failed)" if failed else "")
        if not scores:
            rows.append((*(show(value) for value in key), seeds, "—", "—", "—"))
            continue
        rows.append((*(show(value) for value in key), seeds, _mean_sd(scores, "{:.4f}"),
                     f"{min(scores):.4f} – {max(scores):.4f}", _mean_sd(deltas, delta_format)))
    return Table(columns, tuple(rows))


def _mean_sd(values: Sequence[float], number: str) -> str:
    """`mean ± sd` with the sample sd (n - 1): the spread a new seed would show; one value has none."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return number.format(mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{number.format(mean)} ± {number.format(sd).lstrip('+')}"


def sweep_markdown(table: Table, over_seeds: Table | None, adjust: str = "holm") -> str:
    """The per-cell table with its p-value family stated, and under it the over-seeds table when
    the grid has a seed axis."""
    from harness.report.tables import family_note, to_markdown

    text = to_markdown(table)
    tested = sum(row[table.columns.index("p")] != "—" for row in table.rows)
    if tested:
        text += "\n" + family_note(tested, adjust, "sweep cells that finished") + "\n"
    if over_seeds is not None:
        text += f"\n{OVER_SEEDS_TITLE}\n\n" + to_markdown(over_seeds)
    return text


def sweep_csv(plan: SweepPlan, results: Sequence[CellResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*(axis.key for axis in plan.axes), "metric", "value", "delta", "delta_ci_low", "delta_ci_high",
                     "delta_metric", "baseline", "p_value", "train_seconds", "peak_memory_mb", "trainable_params", "trainable_pct",
                     "run_id", "error"])
    name = metric_label(results, plan.metric)
    for result in results:
        values = [value for _, value in result.cell.values]
        if not result.rows:
            writer.writerow([*values, name, *[""] * 11, result.cell.run_id, result.error])
            continue
        row = result.rows[0]
        writer.writerow([*values, name, cell_metric(result, plan.metric), row.headline_delta, *row.delta_ci,
                         row.delta_name, row.baseline, row.p_value,
                         row.costs.train_seconds, row.costs.peak_memory_mb, row.costs.trainable_params, row.costs.trainable_pct,
                         result.cell.run_id, ""])
    return out.getvalue()


def heatmap(plan: SweepPlan, results: Sequence[CellResult]) -> tuple[bytes, str]:
    """The metric over the first two axes (one axis: a single row). With more axes, each heatmap
    cell is the mean over the others, and the caption says so; the table lists every cell. Seed
    axes go last, so the two axes shown are settings whenever the grid has two."""
    from harness.report.plots import heatmap_png

    axes = sorted(plan.axes, key=lambda axis: axis.key in REPLICATE_AXES)  # stable: grid order otherwise
    first = axes[0]
    second = axes[1] if len(axes) > 1 else None
    rows = [show(v) for v in first.values] if second else [""]
    cols = [show(v) for v in (second.values if second else first.values)]
    buckets: dict[tuple[int, int], list[CellResult]] = {}
    for result in results:
        values = dict(result.cell.values)
        r = first.values.index(values[first.key]) if second else 0
        c = second.values.index(values[second.key]) if second else first.values.index(values[first.key])
        buckets.setdefault((r, c), []).append(result)
    grid, notes = [], []
    for r in range(len(rows)):
        grid_row, note_row = [], []
        for c in range(len(cols)):
            bucket = buckets.get((r, c), [])
            scores = [s for s in (cell_metric(x, plan.metric) for x in bucket) if s is not None]
            value = sum(scores) / len(scores) if scores else math.nan
            grid_row.append(value)
            if not scores:
                note_row.append("failed" if any(x.error for x in bucket) else "")
            elif len(bucket) == 1 and bucket[0].rows:
                note_row.append(f"{value:.3f}\n{bucket[0].rows[0].costs.train_seconds:.0f} s train")
            else:
                note_row.append(f"{value:.3f}\nmean of {len(scores)}")
        grid.append(grid_row)
        notes.append(note_row)
    label = metric_label(results, plan.metric)
    # viridis draws the highest value brightest, the worst one for perplexity: say which way is good
    direction = ", lower is better" if lower_is_better(results, plan.metric) else ""
    others = [axis.key for axis in axes[2:]]
    caption = (f"{label} by {first.key} × {second.key}" if second else f"{label} by {first.key}") + direction
    if others:
        caption += f"; each heatmap cell is the mean over {', '.join(others)} (see the table)"
    png = heatmap_png(grid, rows, cols, row_axis=first.key if second else "", col_axis=(second or first).key,
                      title=f"{plan.task}: {label}{direction}", colorbar_label=label + direction, annotations=notes)
    return png, caption


# ---------------------------------------------------------------- files

def sweep_section(plan: SweepPlan, results: Sequence[CellResult]) -> SweepSection:
    """The sweep's part of the HTML report: what was swept, the heatmap, the table."""
    from harness.report.html import SweepSection

    done = [r for r in results if r.rows]
    png, caption = heatmap(plan, results) if done else (None, "no cell is complete yet")
    axes = " × ".join(f"{axis.key} ({len(axis.values)})" for axis in plan.axes)
    description = (f"{len(plan.cells)} cells over {axes}; {len(done)} complete. Every cell is an ordinary run "
                   f"(see Runs below); the heatmap uses the first two axes, seed axes last.")
    return SweepSection(plan.name, description, png, caption, sweep_table(plan, results),
                        over_seeds_table(plan, results))


def write_outputs(store: Store, plan: SweepPlan, results: Sequence[CellResult], data_dir: Path | None
                  ) -> tuple[str, SweepSection, Path | None]:
    """results/sweeps/<name>.md, .csv and .png, and the HTML report of the complete cells:
    (the markdown table, the report's sweep section, the report's path or None)."""
    from harness.report.html import build_report, render
    from harness.store import atomic_write

    section = sweep_section(plan, results)  # its tables are the markdown's too: built once
    table = sweep_markdown(section.table, section.over_seeds)
    folder = sweeps_dir(store.root)
    atomic_write(folder / f"{plan.name}.md", f"# {plan.name}\n\n{table}")
    atomic_write(folder / f"{plan.name}.csv", sweep_csv(plan, results))
    if section.heatmap_png:
        atomic_write(folder / f"{plan.name}.png", section.heatmap_png)
    rows = [row for result in results for row in result.rows]
    if not rows:
        return table, section, None
    runs = [run for run in store.runs() if run["run_id"] in {row.run_id for row in rows}]
    html = store.root / "reports" / f"{plan.name}.html"
    atomic_write(html, render(build_report(store, runs, rows, data_dir, f"bench sweep {plan.name}", section)))
    return table, section, html


def sweeps_dir(root: Path) -> Path:
    return root / "sweeps"


def save_plan(root: Path, plan: SweepPlan) -> Path:
    from harness.store import atomic_write

    path = sweeps_dir(root) / f"{plan.name}.json"
    atomic_write(path, plan.to_json())
    return path


def load_plan(root: Path, name: str) -> SweepPlan:
    name = name.removesuffix(".json")
    path = sweeps_dir(root) / f"{name}.json"
    if not SWEEP_NAME.match(name) or not path.is_file():
        known = sorted(p.stem for p in sweeps_dir(root).glob("*.json")) if sweeps_dir(root).is_dir() else []
        raise BenchError(f"no sweep {name!r} under {sweeps_dir(root)}" + (f"; sweeps: {', '.join(known)}" if known
                                                                          else "; run `bench sweep` first"))
    from harness.artefacts import parsed

    return parsed(path, SweepPlan.from_json, f"restore it from a copy, or re-run the `bench sweep` that made {name} "
                                             "(its complete cells are skipped)")
