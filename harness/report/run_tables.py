"""Comparisons -> the before/after tables (markdown, CSV) and the per-class table.

Tables are built once as plain cells (`Table`) and rendered per format, so the terminal, the
exports, the LaTeX output and the HTML report always show the same numbers.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from harness.compare.paired import Comparison, LmEvalComparison, RunCosts, TextComparison, format_ci, format_p
from harness.compare.stats import adjust_p
from harness.report.formats import (
    Table,
    adjusted_column,
    baseline_stage,
    count_label,
    csv_number,
    format_delta,
    format_score,
    method_label,
    to_markdown,
)
from harness.report.notes import statistics_notes
from harness.store import Store

Row = Comparison | TextComparison
COLUMNS = ("task", "model", "method", "baseline", "n", "fail b/a", "acc before [95% CI]", "acc after [95% CI]",
           "Δacc [95% CI]", "McNemar p", "F1m before", "F1m after", "trainable", "base s", "train s",
           "val s", "train tok/s", "peak MB base/train/eval")
LM_EVAL_COLUMNS = ("task", "model", "method", "lm-eval task", "metric", "n", "before [95% CI]", "after [95% CI]",
                   "Δ [95% CI]", "test", "paired p", "b/c", "base s", "eval s")
PER_CLASS_TITLE = "Per class: precision, recall and F1 on the eval set, baseline → fine-tuned"


def markdown_table(rows: Sequence[Row], notes: Sequence[str] = (), adjust: str = "holm") -> str:
    """One table per kind of comparison: classification rows, then text rows (own columns); under
    them the p-value family and each row's minimum detectable effect, then `notes`."""
    body = "\n".join(to_markdown(table) for table in comparison_tables(rows, adjust))
    notes = [*statistics_notes(rows, adjust), *notes]
    if notes:
        body += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    return body


def comparison_tables(rows: Sequence[Row], adjust: str = "holm") -> list[Table]:
    """Classification rows and text rows have different columns, so each kind gets its own table.
    Text rows are grouped by headline metric (ROUGE-L, F1, perplexity do not share a column).
    Every row's p-value is adjusted over all of them (one family; `adjust` none leaves the column out)."""
    adjusted = dict(zip(map(id, rows), adjust_p([r.p_value for r in rows], adjust)))
    tables = []
    classification = [r for r in rows if isinstance(r, Comparison)]
    if classification:
        tables.append(_with_adjusted(_classification_table(classification), classification, adjusted, adjust))
    text = [r for r in rows if isinstance(r, TextComparison) and not isinstance(r, LmEvalComparison)]
    for metric in dict.fromkeys(r.metric for r in text):
        chosen = [r for r in text if r.metric == metric]
        tables.append(_with_adjusted(_text_table(chosen), chosen, adjusted, adjust))
    lm_eval = [r for r in rows if isinstance(r, LmEvalComparison)]
    if lm_eval:
        tables.append(_with_adjusted(_lm_eval_table(lm_eval), lm_eval, adjusted, adjust))
    return tables


def _lm_eval_table(rows: Sequence[LmEvalComparison]) -> Table:
    """General ability before -> after: each lm-eval task on the base and the fine-tuned model,
    paired on the same documents (b/c: documents only the base / only the fine-tuned model got right)."""
    cells = []
    for r in rows:
        cells.append((r.task, r.model, r.method, r.lm_eval_task, r.metric, str(r.n),
                      _num_ci(r.before, r.before_ci, r.metric), _num_ci(r.after, r.after_ci, r.metric),
                      format_delta(r.delta, r.delta_ci, r.metric), r.test, format_p(r.p_value),
                      f"{r.mcnemar_b}/{r.mcnemar_c}" if r.test == "McNemar" else "—",
                      f"{r.costs.baseline_seconds:.0f}", f"{r.costs.eval_seconds:.0f}"))
    if not any(r.settings for r in rows):
        return Table(LM_EVAL_COLUMNS, tuple(cells))
    at = LM_EVAL_COLUMNS.index("lm-eval task") + 1  # runs of one model x method: the settings tell them apart
    return Table(LM_EVAL_COLUMNS[:at] + ("settings",) + LM_EVAL_COLUMNS[at:],
                 tuple(c[:at] + (r.settings or "—",) + c[at:] for c, r in zip(cells, rows)))


def _with_adjusted(table: Table, rows: Sequence[Row], adjusted: dict[int, float], adjust: str) -> Table:
    """The adjusted p column right after the p column (McNemar p / bootstrap p)."""
    if adjust == "none":
        return table
    at = next(i for i, name in enumerate(table.columns) if name.endswith(" p")) + 1
    return Table(table.columns[:at] + (adjusted_column(adjust),) + table.columns[at:],
                 tuple(cells[:at] + (format_p(adjusted[id(r)]),) + cells[at:] for cells, r in zip(table.rows, rows)))


def _with_settings(table: Table, rows: Sequence[Row]) -> Table:
    """Adds a `settings` column after `baseline` when some rows share model and method (a sweep's
    cells, re-runs with another learning rate): without it those rows read as duplicates."""
    if not any(r.settings for r in rows):
        return table
    at = table.columns.index("baseline") + 1
    return Table(table.columns[:at] + ("settings",) + table.columns[at:],
                 tuple(cells[:at] + (r.settings or "—",) + cells[at:] for cells, r in zip(table.rows, rows)))


def _text_table(rows: Sequence[TextComparison]) -> Table:
    metric = rows[0].metric
    columns = ("task", "model", "method", "baseline", "n", "fail b/a", f"{metric} before [95% CI]", f"{metric} after [95% CI]",
               f"Δ{rows[0].delta_metric} [95% CI]", "bootstrap p", "other metrics before → after", "trainable",
               "base s", "train s", "val s", "train tok/s", "peak MB base/train/eval")
    cells = []
    for r in rows:
        others = ", ".join(f"{name} {format_score(b, name)}→{format_score(a, name)}" for name, (b, a) in r.others.items())
        cells.append((r.task, r.model, r.method, r.baseline, str(r.n), f"{r.failures_before}/{r.failures_after}",
                      _num_ci(r.before, r.before_ci, r.metric), _num_ci(r.after, r.after_ci, r.metric),
                      format_delta(r.delta, r.delta_ci, r.delta_metric), format_p(r.p_value), others,
                      *_cost_cells(r.costs)))
    if any(r.clusters for r in rows):  # a clustered mean's test is CR1's, not the bootstrap's (see the notes)
        columns = tuple("bootstrap/CR1 p" if c == "bootstrap p" else c for c in columns)
    return _with_settings(Table(columns, tuple(cells)), rows)


def _cost_cells(c: RunCosts) -> tuple[str, ...]:
    """The cost cells every before/after table ends with: trainable parameters, baseline seconds,
    training seconds (forward, backward, optimizer) and validation seconds apart, training tokens
    per training second, and each stage's peak memory (baseline/fine-tune/fine-tuned eval)."""
    peaks = (c.baseline_peak_memory_mb, c.finetune_peak_memory_mb, c.finetuned_peak_memory_mb)
    return (f"{count_label(c.trainable_params)} ({c.trainable_pct:.2f}%)", f"{c.baseline_seconds:.0f}",
            f"{c.train_seconds:.0f}", f"{c.validation_seconds:.0f}", f"{c.tokens_per_second:.0f}",
            "/".join(f"{peak:.0f}" for peak in peaks) if any(peaks) else f"{c.peak_memory_mb:.0f}")


def _num_ci(value: float, ci: Sequence[float], name: str = "") -> str:
    return f"{format_score(value, name)} [{format_score(ci[0], name)}, {format_score(ci[1], name)}]"


def _classification_table(rows: Sequence[Comparison]) -> Table:
    cells = []
    for r in rows:
        cells.append((r.task, r.model, r.method, r.baseline, str(r.n), f"{r.failures_before}/{r.failures_after}",
                      format_ci(r.accuracy_before, r.accuracy_before_ci),
                      format_ci(r.accuracy_after, r.accuracy_after_ci),
                      format_ci(r.delta_accuracy, r.delta_ci, signed=True), format_p(r.p_value),
                      f"{r.f1_macro_before:.3f}", f"{r.f1_macro_after:.3f}", *_cost_cells(r.costs)))
    columns = COLUMNS
    if any(r.clusters for r in rows):  # a clustered row's test is CR1's, not McNemar's (see the notes)
        columns = tuple("McNemar/CR1 p" if c == "McNemar p" else c for c in COLUMNS)
    return _with_settings(Table(columns, tuple(cells)), rows)


def csv_table(rows: Sequence[Comparison], notes: dict[str, Sequence[str]] | None = None, adjust: str = "holm") -> str:
    """One row per comparison; a CI becomes `<name>_low`/`<name>_high` columns and floats keep 6
    significant digits (no 0.49999999999999994), so spreadsheets and pandas read plain numbers.
    `notes` (run id -> data notes) adds the provenance column the markdown shows under its table."""
    out = io.StringIO()
    if rows:
        records = [_csv_record(row.as_dict()) for row in rows]
        for record, p in zip(records, adjust_p([row.p_value for row in rows], adjust)):
            record["p_adjusted"], record["adjustment"] = csv_number(p), adjust
        if notes is not None:
            for row, record in zip(rows, records):
                record["data_notes"] = "; ".join(notes.get(row.run_id, ()))
        writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for record in records for k in record)))
        writer.writeheader()
        writer.writerows(records)
    return out.getvalue()


def _csv_record(fields: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, tuple) and len(value) == 2:
            record[f"{key}_low"], record[f"{key}_high"] = (csv_number(v) for v in value)
        else:
            record[key] = json.dumps(value) if isinstance(value, dict) else csv_number(value)
    return record


def per_class_scores(store: Store, rows: Sequence[Row]) -> list[tuple[Comparison, str, dict[str, Any], dict[str, Any]]]:
    """(row, class, baseline scores, fine-tuned scores) for every class of every classification row,
    from the per-class scores each stage stored (precision, recall, f1, support)."""
    out = []
    for row in rows:
        if not isinstance(row, Comparison):
            continue
        before, after = (store.stage(row.run_id, stage) for stage in (baseline_stage(row), "finetuned"))
        before_classes = before.metrics.get("per_class", {}) if before else {}
        for name, scores in (after.metrics.get("per_class", {}) if after else {}).items():
            if name in before_classes:
                out.append((row, name, before_classes[name], scores))
    return out


def per_class_table(store: Store, rows: Sequence[Row]) -> Table | None:
    """Every class's precision, recall and F1 before -> after (the macro scores' parts); None when
    no row is a classification one."""
    body = tuple(
        (row.task, row.model, method_label(row), row.baseline, name,
         str(a["support"]), *(f"{b[k]:.3f} → {a[k]:.3f}" for k in ("precision", "recall", "f1")),
         f"{a['f1'] - b['f1']:+.3f}")
        for row, name, b, a in per_class_scores(store, rows))
    columns = ("task", "model", "method", "baseline", "class", "support", "precision", "recall", "F1", "ΔF1")
    return Table(columns, body) if body else None


def per_class_csv(store: Store, rows: Sequence[Row]) -> str:
    """The per-class table as plain numbers, one row per run x baseline x class."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["run_id", "task", "model", "method", "settings", "baseline", "class", "support",
                     "precision_before", "precision_after", "recall_before", "recall_after", "f1_before", "f1_after"])
    for row, name, b, a in per_class_scores(store, rows):
        scores = (csv_number(float(side[k])) for k in ("precision", "recall", "f1") for side in (b, a))
        writer.writerow([row.run_id, row.task, row.model, row.method, row.settings, row.baseline, name,
                         a["support"], *scores])
    return out.getvalue()
