"""The leaderboard: one row per task x model x method (x baseline), read from the store alone.

A store often holds several configurations of the same model and method (a sweep, a re-run with
another learning rate). The leaderboard shows one of them per row, chosen by the validation score
the fine-tuning stage recorded, never by the eval score it reports: picking the best eval result
out of many would overstate it. Every configuration stays in the before/after table.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from harness.compare.paired import Comparison, LmEvalComparison, TextComparison, compare, format_p
from harness.options import shown_settings
from harness.errors import BenchError
from harness.compare.stats import adjust_p
from harness.report.formats import Table, adjusted_column, format_delta, format_score, show, to_markdown
from harness.report.notes import family_note
from harness.store import Store

Row = Comparison | TextComparison

COLUMNS = ("task", "model", "method", "baseline", "metric", "baseline score", "fine-tuned", "Δ [95% CI]", "p",
           "n", "fail b/a", "trainable %", "train s", "peak MB", "configs")
SELECTION_NOTE = ("Where a model x method has several configurations in the store (configs > 1), the row shows "
                  "the one with the best validation score; the eval score never picks it.")


@dataclass(frozen=True)
class LeaderboardRow:
    task: str
    model: str
    method: str
    baseline: str
    metric: str
    before: float
    after: float
    delta: float  # of `delta_metric`: the headline, or for perplexity NLL per token (what is resampled)
    delta_metric: str
    delta_ci: tuple[float, float]
    p_value: float
    n: int
    failures_before: int
    failures_after: int
    trainable_pct: float
    trainable_params: int
    train_seconds: float
    peak_memory_mb: float
    lower_is_better: bool
    configs: int  # configurations of this task x model x method x baseline in the store
    selected_by: str  # "only", "validation <metric>", or "latest" when validation scores do not compare
    run_id: str


def select_runs(store: Store, task: str | None = None, run_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Runs by id (in the order given) or all runs, optionally of one task: `--task goemotions`
    matches every variant (goemotions-4labels, ...), an exact key matches only itself."""
    runs = store.runs()
    if run_ids:
        by_id = {run["run_id"]: run for run in runs}
        for run_id in run_ids:
            if run_id not in by_id:
                raise BenchError(f"run {run_id!r} is not in the store at {store.root}; "
                                 "see `bench report --format csv` for run ids")
        runs = [by_id[run_id] for run_id in dict.fromkeys(run_ids)]
    if task:
        runs = [run for run in runs if run["task"] == task or run["task"].startswith(task + "-")]
    return runs


def collect(store: Store, runs: Sequence[dict[str, Any]]) -> list[Row]:
    """Paired before/after comparisons of the runs that finished their fine-tuned evaluation."""
    rows: list[Row] = []
    for run in runs:
        stages = store.stages_of(run["run_id"])
        if "finetuned" not in stages:
            continue
        records = {stage: store.stage(run["run_id"], stage) for stage in stages}
        rows += compare(store, run["run_id"], run["config"], records)
    configs = {run["run_id"]: run["config"] for run in runs}
    return [replace(row, settings=label) if label else row for row, label in zip(rows, settings_labels(rows, configs))]


def settings_labels(rows: Sequence[Row], configs: dict[str, dict[str, Any]]) -> list[str]:
    """Per row, the settings in which its run differs from the other runs of its task x model x
    method x baseline among `rows` (`lora_rank=4, lr=5e-05`); empty when it is the only one.

    The differing keys are found once per group, each config compared with the group's first:
    comparing every row with all its peers was cubic in a group's runs (`bench report` of a
    400-cell sweep took minutes)."""
    configs = {run_id: shown_settings(config) for run_id, config in configs.items()}
    peers: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        peers.setdefault(_group(row), []).append(configs[row.run_id])
    differing: dict[tuple[str, str, str, str], list[str]] = {}
    for group, group_configs in peers.items():
        if len(group_configs) < 2:
            continue
        first = group_configs[0]
        keys = dict.fromkeys(key for config in group_configs for key in config)
        # values are not all equal exactly when one differs from the first's (None where absent)
        follows_seed = all(config["train_seed"] == config.get("seed", 0) for config in group_configs)
        differing[group] = sorted(key for key in keys if any(config.get(key) != first.get(key)
                                                             for config in group_configs)
                                  and not (key == "train_seed" and follows_seed))  # then the seed says it
    return [", ".join(f"{key}={show(configs[row.run_id].get(key))}" for key in differing.get(_group(row), ()))
            for row in rows]


def _group(row: Row) -> tuple[str, str, str, str]:
    return row.task, row.model, row.method, row.baseline


def leaderboard(store: Store, rows: Sequence[Row]) -> list[LeaderboardRow]:
    """One entry per task x model x method x baseline, best fine-tuned score first within a task."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for row in rows:
        if isinstance(row, LmEvalComparison):  # a side check of the run, not its task's score
            continue
        groups.setdefault(_group(row), []).append(row)
    entries = []
    for group in groups.values():
        chosen, how = _select(store, group)
        entries.append(_entry(chosen, len(group), how))
    return sorted(entries, key=lambda e: (e.task, e.after if e.lower_is_better else -e.after, e.model, e.method))


def _select(store: Store, group: Sequence[Row]) -> tuple[Row, str]:
    """The configuration with the best validation score: the early-stopping criterion the runs
    shared, else (criteria differ) the best of the default criterion every run's curves record
    (macro F1 for classification, loss for text tasks). Only runs with neither: the latest wins."""
    if len(group) == 1:
        return group[0], "only"
    default = "loss" if isinstance(group[0], TextComparison) else "f1_macro"
    scored, criteria, validation_sizes = [], set(), set()
    for row in group:
        record = store.stage(row.run_id, "finetune")
        config = store.run_config(row.run_id) or {}
        criterion = config.get("early_stop_metric", "auto")
        criteria.add(default if criterion == "auto" else criterion)
        validation_sizes.add(config.get("validation_samples"))
        scored.append((row, record.metrics.get("best_validation") if record else None))
    shared = len(criteria) == 1
    criterion = next(iter(criteria)) if shared else default
    if not shared or any(not isinstance(value, (int, float)) for _, value in scored):
        scored = [(row, _best_in_curves(store.curves(row.run_id), criterion)) for row in group]
        if any(value is None for _, value in scored):
            return max(group, key=lambda row: store.finished_at(row.run_id, "finetuned") or 0.0), "latest"
    sign = -1.0 if criterion == "loss" else 1.0
    best = max(scored, key=lambda item: sign * float(item[1]))
    differ = " (validation sets of different sizes)" if len(validation_sizes) > 1 else ""
    return best[0], f"validation {criterion}{differ}"


def _best_in_curves(curves: Sequence[dict[str, Any]], criterion: str) -> float | None:
    values = [point[f"val_{criterion}"] for point in curves if isinstance(point.get(f"val_{criterion}"), (int, float))]
    if not values:
        return None
    return min(values) if criterion == "loss" else max(values)


def _entry(row: Row, configs: int, selected_by: str) -> LeaderboardRow:
    return LeaderboardRow(
        task=row.task, model=row.model, method=row.method, baseline=row.baseline, metric=row.headline,
        before=row.headline_before, after=row.headline_after, delta=row.headline_delta, delta_metric=row.delta_name,
        delta_ci=tuple(row.delta_ci), p_value=row.p_value, n=row.n,
        failures_before=row.failures_before, failures_after=row.failures_after, trainable_pct=row.costs.trainable_pct,
        trainable_params=row.costs.trainable_params, train_seconds=row.costs.train_seconds,
        peak_memory_mb=row.costs.peak_memory_mb,
        lower_is_better=row.lower_is_better, configs=configs, selected_by=selected_by, run_id=row.run_id)


def leaderboard_table(entries: Sequence[LeaderboardRow], adjust: str = "holm") -> Table:
    """One row per entry; with an adjustment, a `p adj` column after `p`, adjusted over the rows shown."""
    adjusted = adjust_p([e.p_value for e in entries], adjust)
    cells = []
    for e, p_adj in zip(entries, adjusted):
        # A delta of another quantity than the scores (NLL per token for perplexity) names it.
        delta = format_delta(e.delta, e.delta_ci, e.delta_metric) + (f" {e.delta_metric}" if e.delta_metric != e.metric
                                                                       else "")
        cells.append((e.task, e.model, e.method, e.baseline, e.metric + (" (lower is better)" if e.lower_is_better
                                                                         else ""),
                      format_score(e.before, e.metric), format_score(e.after, e.metric), delta,
                      format_p(e.p_value), *((format_p(p_adj),) if adjust != "none" else ()), str(e.n),
                      f"{e.failures_before}/{e.failures_after}", f"{e.trainable_pct:.2f}", f"{e.train_seconds:.1f}",
                      f"{e.peak_memory_mb:.0f}", str(e.configs)))
    at = COLUMNS.index("p") + 1
    columns = COLUMNS[:at] + ((adjusted_column(adjust),) if adjust != "none" else ()) + COLUMNS[at:]
    return Table(columns, tuple(cells))


def leaderboard_markdown(entries: Sequence[LeaderboardRow], adjust: str = "holm") -> str:
    text = to_markdown(leaderboard_table(entries, adjust))
    if any(e.configs > 1 for e in entries):
        text += "\n" + SELECTION_NOTE + "\n"
    if entries:
        text += "\n" + family_note(len(entries), adjust, "leaderboard rows") + "\n"
    return text


def leaderboard_csv(entries: Sequence[LeaderboardRow]) -> str:
    """Full precision, one column per number (the CI as two columns), for spreadsheets and pandas."""
    out = io.StringIO()
    fields = [f for f in LeaderboardRow.__dataclass_fields__ if f != "delta_ci"]
    fields[fields.index("delta") + 1:fields.index("delta") + 1] = ["delta_ci_low", "delta_ci_high"]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for e in entries:
        row = asdict(e)
        low, high = row.pop("delta_ci")
        writer.writerow({**row, "delta_ci_low": low, "delta_ci_high": high})
    return out.getvalue()

