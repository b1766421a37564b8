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

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.artefacts import DamagedFile
from harness.compare.paired import Comparison, TextComparison, compare
from harness.errors import BenchError, did_you_mean
from harness.options import TASK_OPTIONS, RunConfig, recorded_task_options
from harness.progress import progress
from harness.report.formats import show
from harness.run.sweep_plan import Axis, Cell, CellResult, SweepPlan
from harness.store import StageRecord, Store
from harness.task.registry import get_task
from harness.task.registry import task_options as declared_options


if TYPE_CHECKING:
    from harness.run.runner import PlannedRun, Runner
    from harness.task.spec import TaskSpec

Row = Comparison | TextComparison
Converter = Callable[[str], Any]
Log = Callable[[str], None]
AfterRun = Callable[[str, RunConfig, dict[str, StageRecord]], None]
SPECIAL_METRICS = ("delta", "before")  # besides the fine-tuned stage's own metric names


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    spec: TaskSpec
    run: PlannedRun




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
    from harness.run.runner import plan  # pandas (task.data): keeps `bench --help` light

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
    from harness.run.runner import Runner  # pandas (task.data): keeps `bench --help` light

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
            if after_run is not None:
                after_run(item.run.run_id, item.run.config, records)
            rows = compare(store, item.run.run_id, item.run.config.to_dict(), records)
            results.append(CellResult(item.cell, records, tuple(rows)))
            # cells found complete count towards the total but not the rate (the ETA is the cells run)
            (bar.skip if stored else bar.advance)(1)
            bar.set(skipped_as_complete=bar.skipped or None)
    return results


def complete_in_store(store: Store, run: PlannedRun) -> bool:
    """Every stage of `run` is in the store already (a re-run sweep skips it)."""
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
