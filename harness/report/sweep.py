"""A sweep's results rendered: the per-cell table (markdown, CSV), the over-seeds table, the
heatmap, the sweep's section of the HTML report, and its files under results/sweeps/."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from harness.compare.paired import Comparison, TextComparison, format_p
from harness.compare.stats import adjust_p, mean_sd
from harness.report.formats import (
    OVER_SEEDS_TITLE,
    Table,
    adjusted_column,
    count_label,
    format_delta,
    on_wide_scale,
    show,
    to_markdown,
)
from harness.report.html import SweepSection, build_report, render
from harness.report.notes import family_note
from harness.report.plots import heatmap_png
from harness.run.sweep_plan import CellResult, SweepPlan, sweeps_dir
from harness.store import Store, atomic_write

# Axes whose values repeat one setting rather than change it: the sweep pools over them (mean ± sd)
# and keeps them off the heatmap's two axes.
REPLICATE_AXES = ("seed", "train_seed")


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
    """`mean ± sd` (compare.stats.mean_sd: the sample sd); one value has no sd, so only its mean."""
    mean, sd = mean_sd(values)
    if sd is None:
        return number.format(mean)
    return f"{number.format(mean)} ± {number.format(sd).lstrip('+')}"


def sweep_markdown(table: Table, over_seeds: Table | None, adjust: str = "holm") -> str:
    """The per-cell table with its p-value family stated, and under it the over-seeds table when
    the grid has a seed axis."""
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
    grid, notes = _heatmap_cells(plan, buckets, len(rows), len(cols))
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


def _heatmap_cells(plan: SweepPlan, buckets: dict[tuple[int, int], list[CellResult]], rows: int, cols: int
                   ) -> tuple[list[list[float]], list[list[str]]]:
    """Each heatmap cell's value (the mean of its sweep cells' metric, NaN when none finished) and
    its annotation (the value and its training seconds, or how many cells it is the mean of)."""
    grid, notes = [], []
    for r in range(rows):
        grid_row, note_row = [], []
        for c in range(cols):
            bucket = buckets.get((r, c), [])
            scores = [s for s in (cell_metric(x, plan.metric) for x in bucket) if s is not None]
            value = mean_sd(scores)[0] if scores else math.nan
            grid_row.append(value)
            if not scores:
                note_row.append("failed" if any(x.error for x in bucket) else "")
            elif len(bucket) == 1 and bucket[0].rows:
                note_row.append(f"{value:.3f}\n{bucket[0].rows[0].costs.train_seconds:.0f} s train")
            else:
                note_row.append(f"{value:.3f}\nmean of {len(scores)}")
        grid.append(grid_row)
        notes.append(note_row)
    return grid, notes


def sweep_section(plan: SweepPlan, results: Sequence[CellResult]) -> SweepSection:
    """The sweep's part of the HTML report: what was swept, the heatmap, the table."""
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
