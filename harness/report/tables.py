"""Comparisons -> before/after tables (markdown, CSV, LaTeX) and a few sample predictions.

Tables are built once as plain cells (`Table`) and rendered per format, so the terminal, the
exports, the LaTeX output and the HTML report always show the same numbers.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from harness.compare.paired import Comparison, LmEvalComparison, RunCosts, TextComparison, format_ci, format_p
from harness.task.spec import TaskSpec
from harness.compare.stats import ADJUSTMENTS, adjust_p
from harness.store import Store, atomic_write
from harness.types import Example, Prediction

COLUMNS = ("task", "model", "method", "baseline", "n", "fail b/a", "acc before [95% CI]", "acc after [95% CI]",
           "Δacc [95% CI]", "McNemar p", "F1m before", "F1m after", "trainable", "base s", "train s",
           "val s", "train tok/s", "peak MB base/train/eval")


@dataclass(frozen=True)
class Table:
    """A rendered-format-neutral table: header and rows of display strings."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def markdown_table(rows: Sequence[Comparison | TextComparison], notes: Sequence[str] = (),
                   adjust: str = "holm") -> str:
    """One table per kind of comparison: classification rows, then text rows (own columns); under
    them the p-value family and each row's minimum detectable effect, then `notes`."""
    body = "\n".join(to_markdown(table) for table in comparison_tables(rows, adjust))
    notes = [*statistics_notes(rows, adjust), *notes]
    if notes:
        body += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    return body


def comparison_tables(rows: Sequence[Comparison | TextComparison], adjust: str = "holm") -> list[Table]:
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


LM_EVAL_COLUMNS = ("task", "model", "method", "lm-eval task", "metric", "n", "before [95% CI]", "after [95% CI]",
                   "Δ [95% CI]", "test", "paired p", "b/c", "base s", "eval s")


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


def adjusted_column(adjust: str) -> str:
    return f"p adj ({adjust})"


def _with_adjusted(table: Table, rows: Sequence[Comparison | TextComparison], adjusted: dict[int, float],
                   adjust: str) -> Table:
    """The adjusted p column right after the p column (McNemar p / bootstrap p)."""
    if adjust == "none":
        return table
    at = next(i for i, name in enumerate(table.columns) if name.endswith(" p")) + 1
    return Table(table.columns[:at] + (adjusted_column(adjust),) + table.columns[at:],
                 tuple(cells[:at] + (format_p(adjusted[id(r)]),) + cells[at:] for cells, r in zip(table.rows, rows)))


def family_note(count: int, adjust: str, what: str = "before/after comparisons in this report") -> str:
    """The sentence under a table with an adjusted p column: which adjustment, over what family."""
    if adjust == "none":
        return f"p: not adjusted for multiple comparisons (--adjust none); {count} {what}"
    return f"p adj: {ADJUSTMENTS[adjust]} over a family of the {count} {what}"


def mde_note(row: Comparison | TextComparison) -> str:
    """One row's minimum detectable effect, in words."""
    mde = "n too small for any" if math.isnan(row.mde) else f"±{format_score(row.mde, row.delta_name)}"
    return (f"MDE {row.model} {method_label(row)} vs {row.baseline}: smallest Δ{row.delta_name} detectable at 80% "
            f"power, α 0.05, given n {row.n} and the observed {row.mde_basis}: {mde}")


def clustering_note(row: Comparison | TextComparison) -> str:
    """How a row's CIs and paired test treat items that share a cluster, in words."""
    return f"CIs and p, {row.model} {method_label(row)} vs {row.baseline}: {row.clustering}"


def statistics_notes(rows: Sequence[Comparison | TextComparison], adjust: str) -> list[str]:
    """What the p and Δ columns need said: the adjustment family, every row's MDE, and how its
    errors treat clustered items (for tasks that declare clusters)."""
    if not rows:
        return []
    return [family_note(len(rows), adjust), *(mde_note(row) for row in rows if row.mde_basis),
            *(clustering_note(row) for row in rows if row.clustering)]


def to_markdown(table: Table) -> str:
    lines = ["| " + " | ".join(_escape(c) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


# LaTeX's special characters in text mode; `<`, `>` and `|` print as other glyphs in OT1 fonts.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}", "Δ": r"$\Delta$", "→": r"$\to$", "—": "---", "−": "$-$",
          "×": r"$\times$", "·": r"$\cdot$", "…": r"\ldots{}", "\n": " "}
_NUMERIC = re.compile(r"^([+\-−]?[\d.]|<1e-4$|—$)")


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX.get(char, char) for char in text)
    # A row starting with `[` would be read as the optional argument of the previous row's `\\`.
    return "{}" + escaped if escaped.startswith("[") else escaped


def to_latex(table: Table, caption: str = "", notes: Sequence[str] = ()) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); every cell escaped; `notes` (how to read
    it, warnings) in small type under it."""
    # numbers right-aligned: a column whose every cell starts like a number (or is empty: —)
    spec = "".join("r" if table.rows and all(_NUMERIC.match(row[i]) for row in table.rows) else "l"
                   for i in range(len(table.columns)))
    lines = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright"] + [latex_escape(n) + r"\par" for n in notes] + ["}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _with_settings(table: Table, rows: Sequence[Comparison | TextComparison]) -> Table:
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


def show(value: Any) -> str:
    """A setting's value in a label or cell: floats as `5e-05`, missing as `—`."""
    return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def format_delta(value: float, ci: Sequence[float], name: str) -> str:
    """A signed difference of metric `name` with its CI, at that metric's scale (one decimal for
    0-100 scores, three for 0-1)."""
    return format_ci(value, ci, signed=True, decimals=1 if on_wide_scale(name) else 3)


def format_score(value: float, name: str = "") -> str:
    """3 decimals for 0-1 scores, 1 for 0-100 scales (BLEU, SQuAD) and perplexities."""
    return f"{value:.1f}" if on_wide_scale(name) or abs(value) >= 1.5 else f"{value:.3f}"


def on_wide_scale(name: str) -> bool:
    return name.split("_")[-1] in ("bleu", "exact", "f1", "perplexity") or name.startswith(("bleu", "perplexity"))


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


def csv_number(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) and math.isfinite(value) else value


def data_notes(store: Store, rows: Sequence[Comparison | TextComparison]) -> dict[str, tuple[str, ...]]:
    """Run id -> the data provenance its fine-tuned stage recorded (carved splits, sample sizes)."""
    notes = {}
    for run_id in dict.fromkeys(row.run_id for row in rows):
        record = store.stage(run_id, "finetuned")
        notes[run_id] = tuple(record.info.get("data_notes", ())) if record else ()
    return notes


def method_label(row: Comparison | TextComparison) -> str:
    """The method, with the settings that tell several configurations of one model x method (a
    sweep's cells) apart: `lora (lora_rank=2, lr=0.001)`."""
    return row.method + (f" ({row.settings})" if row.settings else "")


def score_notes(store: Store, rows: Sequence[Comparison | TextComparison]) -> list[str]:
    """What the scores need said beside them: the majority-class accuracy of each classification
    eval set, and any stage whose answers were all the same (a collapsed model scores the share of
    that answer, which can look like a gain)."""
    notes: dict[str, None] = {}
    for row in rows:
        who = f"{row.model} {method_label(row)}"
        stages = ((baseline_stage(row), f"baseline ({row.baseline})"), ("finetuned", "fine-tuned"))
        bleu = []
        for stage, name in stages:
            record = store.stage(row.run_id, stage)
            metrics = record.metrics if record else {}
            majority = metrics.get("majority")
            if majority:
                notes[f"{row.task}: always answering the most frequent eval class ({majority['label']}) would "
                      f"score accuracy {majority['accuracy']:.3f}"] = None
            for warning in metrics.get("warnings", ()):
                notes[f"warning: {who}, {name}: {warning}"] = None
            if isinstance(metrics.get("bleu"), dict) and "precisions" in metrics["bleu"]:
                bleu.append(metrics["bleu"])
        if len(bleu) == 2:
            notes[f"{row.task} {who}: {bleu_breakdown(*bleu)}"] = None
    return list(notes)


def bleu_breakdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What a BLEU change is made of: its n-gram precisions and brevity penalty, before -> after."""
    def precisions(bleu: dict[str, Any]) -> str:
        return "/".join(f"{p:.1f}" for p in bleu["precisions"])

    return (f"BLEU n-gram precisions (1/2/3/4-gram) {precisions(before)} → {precisions(after)}, brevity penalty "
            f"{before['bp']:.3f} → {after['bp']:.3f} (output/reference length {before['length_ratio']:.2f} → "
            f"{after['length_ratio']:.2f})")


def table_notes(store: Store, rows: Sequence[Comparison | TextComparison]) -> list[str]:
    """Everything said under a before/after table of stored runs: data provenance, then score context."""
    return flat_notes(rows, data_notes(store, rows)) + score_notes(store, rows)


def flat_notes(rows: Sequence[Comparison | TextComparison], notes: dict[str, tuple[str, ...]]) -> list[str]:
    """The notes under a table of several runs: each once, prefixed by its task."""
    by_task: dict[str, dict[str, None]] = {}
    for row in rows:
        for note in notes.get(row.run_id, ()):
            by_task.setdefault(row.task, {})[note] = None
    return [f"{task}: {note}" for task, task_notes in by_task.items() for note in task_notes]


def sample_outputs(store: Store, row: TextComparison, texts: dict[str, str], references: dict[str, str],
                   count: int = 3) -> str:
    """Text tasks: the examples the fine-tuned model improved most, then the one it hurt most."""
    key = row.delta_metric
    chosen = output_pairs(store, row, count)
    lines = [f"Sample outputs, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        lines.append(f"  [{b.example_id}] input: {_short(texts.get(b.example_id, ''))}")
        lines.append(f"      reference: {_short(references.get(b.example_id, ''))}")
        for name, p in (("before", b), ("after ", a)):
            shown = "(no output: failed)" if p.output is None else _short(p.output) if p.output.strip() else \
                "(empty: no answer)"
            lines.append(f"      {name} ({key} {(p.values or {}).get(key, float('nan')):.3f}): {shown}")
    return "\n".join(lines)


def output_pairs(store: Store, row: TextComparison, count: int) -> list[tuple[Prediction, Prediction]]:
    """(before, after) of the `count - 1` examples fine-tuning improved most, then the one it hurt most."""
    before, after = store.predictions(row.run_id, baseline_stage(row)), store.predictions(row.run_id, "finetuned")
    key = row.delta_metric
    sign = -1.0 if row.lower_is_better else 1.0
    gains = sorted(zip(before, after), key=lambda pair: -sign * ((pair[1].values or {}).get(key, 0.0)
                                                                 - (pair[0].values or {}).get(key, 0.0)))
    return gains[: count - 1] + gains[-1:] if len(gains) >= count else gains


PER_CLASS_TITLE = "Per class: precision, recall and F1 on the eval set, baseline → fine-tuned"
OVER_SEEDS_TITLE = "Over seeds: mean ± sd (sample sd) per setting"


def per_class_scores(store: Store, rows: Sequence[Comparison | TextComparison]
                     ) -> list[tuple[Comparison, str, dict[str, Any], dict[str, Any]]]:
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


def per_class_table(store: Store, rows: Sequence[Comparison | TextComparison]) -> Table | None:
    """Every class's precision, recall and F1 before -> after (the macro scores' parts); None when
    no row is a classification one."""
    body = tuple(
        (row.task, row.model, method_label(row), row.baseline, name,
         str(a["support"]), *(f"{b[k]:.3f} → {a[k]:.3f}" for k in ("precision", "recall", "f1")),
         f"{a['f1'] - b['f1']:+.3f}")
        for row, name, b, a in per_class_scores(store, rows))
    columns = ("task", "model", "method", "baseline", "class", "support", "precision", "recall", "F1", "ΔF1")
    return Table(columns, body) if body else None


def per_class_csv(store: Store, rows: Sequence[Comparison | TextComparison]) -> str:
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


def baseline_stage(row: Comparison | TextComparison) -> str:
    """The store stage behind a row's baseline label ("prompt 0-shot" -> "baseline:prompt")."""
    return "baseline:" + row.baseline.split(" ")[0]


def _short(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return repr(flat[:limit] + ("..." if len(flat) > limit else ""))


def sample_predictions(store: Store, row: Comparison, labels: Sequence[str], texts: dict[str, str],
                       count: int = 4) -> str:
    """Examples where the fine-tuned model changed its answer first (fixed, then broken), then agreed."""
    chosen = label_pairs(store, row, count)
    lines = [f"Sample predictions, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        text = " ".join(texts.get(b.example_id, "").split())
        lines.append(f"  [{b.example_id}] {text[:90]!r}{'...' if len(text) > 90 else ''}")
        lines.append(f"      gold {labels[b.gold]}  |  before {label_text(b, labels)}  |  after {label_text(a, labels)}")
    return "\n".join(lines)


def label_pairs(store: Store, row: Comparison, count: int) -> list[tuple[Prediction, Prediction]]:
    """(before, after) pairs: up to `count // 2` fixed by fine-tuning, then up to `count // 4` broken,
    then unchanged answers, then the rest (2 fixed + 1 broken of 4, as the terminal always showed)."""
    before, after = store.predictions(row.run_id, baseline_stage(row)), store.predictions(row.run_id, "finetuned")
    pairs = list(zip(before, after))
    fixed = [i for i, (b, a) in enumerate(pairs) if b.label != b.gold and a.label == a.gold]
    broken = [i for i, (b, a) in enumerate(pairs) if b.label == b.gold and a.label != a.gold]
    same = [i for i, (b, a) in enumerate(pairs) if b.label == a.label]
    order = fixed[: max(1, count // 2)] + broken[: max(1, count // 4)] + same + list(range(len(pairs)))
    return [pairs[i] for i in list(dict.fromkeys(order))[:count]]


def label_text(prediction: Prediction, labels: Sequence[str]) -> str:
    """"positive (p=0.61)", or FAILED when the example could not be scored."""
    if prediction.label is None:
        return "FAILED"
    return f"{labels[prediction.label]} (p={label_probabilities(prediction.scores)[prediction.label]:.2f})"


def label_probabilities(scores: Sequence[float]) -> list[float]:
    """Head scores are already probabilities; prompt log-likelihoods are normalised over the labels."""
    if all(0.0 <= s <= 1.0 for s in scores) and abs(sum(scores) - 1.0) < 1e-3:
        return list(scores)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return [w / sum(weights) for w in weights]


def count_label(n: int) -> str:
    """Parameter counts as 4.2k, 460.8k, 1.2B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def print_and_save(store: Store, spec: TaskSpec, rows: Sequence[Comparison | TextComparison], splits: Any,
                   seconds: float) -> str:
    """A finished `bench run`/`rescore`: the before/after table and sample predictions on stdout,
    the same table as markdown and CSV under results/tables/; returns the tables' name."""
    from harness.faults import reached

    table = markdown_table(rows, [*splits.notes, *score_notes(store, rows)])
    classes = per_class_table(store, rows)
    if classes:
        table += f"\n### {PER_CLASS_TITLE}\n\n" + to_markdown(classes)
    print(f"\n## {spec.key}: before / after fine-tuning\n")
    print(table)
    texts, references = example_texts(spec, splits.eval)
    for row in rows:
        if isinstance(row, LmEvalComparison):  # its documents are lm-eval's, not this task's examples
            continue
        if spec.kind.discrete:
            print(sample_predictions(store, row, spec.kind.labels, texts) + "\n")  # type: ignore[attr-defined]
        else:
            print(sample_outputs(store, row, texts, references) + "\n")
    name = f"{spec.key}__" + hashlib.sha256("|".join(r.run_id + r.baseline for r in rows).encode()).hexdigest()[:8]
    atomic_write(store.root / "tables" / f"{name}.md", f"# {spec.key}: before / after fine-tuning\n\n{table}")
    reached("report-written", 1)
    atomic_write(store.root / "tables" / f"{name}.csv", csv_table(rows, {row.run_id: splits.notes for row in rows}))
    print(f"tables: {store.root / 'tables' / name}.md and .csv   wall time {seconds:.1f} s")
    return name


def example_texts(spec: TaskSpec, examples: Iterable[Example]) -> tuple[dict[str, str], dict[str, str]]:
    """Example id -> what the model was shown (a document's held-out prompt, for language
    modelling), and id -> what it should have written (references, or the document's continuation)."""
    return spec.kind.shown(list(examples))
