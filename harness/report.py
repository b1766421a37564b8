"""Comparisons -> before/after tables (markdown, CSV) and a few sample predictions."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Sequence

from harness.compare import Comparison, TextComparison, format_ci, format_p
from harness.store import Store
from harness.types import Prediction

COLUMNS = ("model", "method", "baseline", "n", "fail b/a", "acc before [95% CI]", "acc after [95% CI]",
           "Δacc [95% CI]", "McNemar p", "F1m before", "F1m after", "trainable", "base s", "train s",
           "tok/s", "peak MB")


def markdown_table(rows: Sequence[Comparison | TextComparison], notes: Sequence[str] = ()) -> str:
    """One table per kind of comparison: classification rows, then text rows (own columns)."""
    tables = []
    classification = [r for r in rows if isinstance(r, Comparison)]
    text = [r for r in rows if isinstance(r, TextComparison)]
    if classification:
        tables.append(_classification_table(classification))
    if text:
        tables.append(_text_table(text))
    body = "\n".join(tables)
    if notes:
        body += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    return body


def _text_table(rows: Sequence[TextComparison]) -> str:
    metric = rows[0].metric
    columns = ("model", "method", "baseline", "n", "fail b/a", f"{metric} before [95% CI]", f"{metric} after [95% CI]",
               f"Δ{rows[0].delta_metric} [95% CI]", "bootstrap p", "other metrics before → after", "trainable",
               "base s", "train s", "tok/s", "peak MB")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        others = ", ".join(f"{name} {_num(b)}→{_num(a)}" for name, (b, a) in r.others.items())
        cells = (r.model, r.method, r.baseline, str(r.n), f"{r.failures_before}/{r.failures_after}",
                 _num_ci(r.before, r.before_ci), _num_ci(r.after, r.after_ci),
                 format_ci(r.delta, r.delta_ci, signed=True), format_p(r.p_value), others,
                 f"{_count(r.trainable_params)} ({r.trainable_pct:.2f}%)", f"{r.baseline_seconds:.0f}",
                 f"{r.train_seconds:.0f}", f"{r.tokens_per_second:.0f}", f"{r.peak_memory_mb:.0f}")
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    """3 decimals for 0-1 scores, 1 for 0-100 scores (BLEU, SQuAD) and perplexities."""
    return f"{value:.3f}" if abs(value) < 1.5 else f"{value:.1f}"


def _num_ci(value: float, ci: Sequence[float]) -> str:
    return f"{_num(value)} [{_num(ci[0])}, {_num(ci[1])}]"


def _classification_table(rows: Sequence[Comparison]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        cells = (r.model, r.method, r.baseline, str(r.n), f"{r.failures_before}/{r.failures_after}",
                 format_ci(r.accuracy_before, r.accuracy_before_ci), format_ci(r.accuracy_after, r.accuracy_after_ci),
                 format_ci(r.delta_accuracy, r.delta_ci, signed=True), format_p(r.p_value),
                 f"{r.f1_macro_before:.3f}", f"{r.f1_macro_after:.3f}",
                 f"{_count(r.trainable_params)} ({r.trainable_pct:.2f}%)", f"{r.baseline_seconds:.0f}",
                 f"{r.train_seconds:.0f}", f"{r.tokens_per_second:.0f}", f"{r.peak_memory_mb:.0f}")
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Comparison]) -> str:
    out = io.StringIO()
    if rows:
        fields = list(rows[0].as_dict())
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (list(v) if isinstance(v, tuple) else json.dumps(v) if isinstance(v, dict) else v)
                             for k, v in row.as_dict().items()})
    return out.getvalue()


def sample_outputs(store: Store, row: TextComparison, texts: dict[str, str], references: dict[str, str],
                   count: int = 3) -> str:
    """Text tasks: the examples the fine-tuned model improved most, then the one it hurt most."""
    stage = "baseline:" + row.baseline.split(" ")[0]
    before, after = store.predictions(row.run_id, stage), store.predictions(row.run_id, "finetuned")
    key = row.delta_metric
    sign = -1.0 if row.lower_is_better else 1.0
    gains = sorted(zip(before, after), key=lambda pair: -sign * ((pair[1].values or {}).get(key, 0.0)
                                                                 - (pair[0].values or {}).get(key, 0.0)))
    chosen = gains[: count - 1] + gains[-1:] if len(gains) >= count else gains
    lines = [f"Sample outputs, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        lines.append(f"  [{b.example_id}] input: {_short(texts.get(b.example_id, ''))}")
        lines.append(f"      reference: {_short(references.get(b.example_id, ''))}")
        lines.append(f"      before ({key} {(b.values or {}).get(key, float('nan')):.3f}): {_short(b.output or '')}")
        lines.append(f"      after  ({key} {(a.values or {}).get(key, float('nan')):.3f}): {_short(a.output or '')}")
    return "\n".join(lines)


def _short(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return repr(flat[:limit] + ("..." if len(flat) > limit else ""))


def sample_predictions(store: Store, row: Comparison, labels: Sequence[str], texts: dict[str, str],
                       count: int = 4) -> str:
    """Examples where the fine-tuned model changed its answer first (fixed, then broken), then agreed."""
    stage = "baseline:" + row.baseline.split(" ")[0]
    before, after = store.predictions(row.run_id, stage), store.predictions(row.run_id, "finetuned")
    pairs = list(zip(before, after))
    fixed = [(b, a) for b, a in pairs if b.label != b.gold and a.label == a.gold]
    broken = [(b, a) for b, a in pairs if b.label == b.gold and a.label != a.gold]
    same = [(b, a) for b, a in pairs if b.label == a.label]
    chosen = (fixed[:2] + broken[:1] + same)[:count]
    lines = [f"Sample predictions, {row.model} ({row.baseline} -> fine-tuned {row.method}):"]
    for b, a in chosen:
        text = " ".join(texts.get(b.example_id, "").split())
        lines.append(f"  [{b.example_id}] {text[:90]!r}{'...' if len(text) > 90 else ''}")
        lines.append(f"      gold {labels[b.gold]}  |  before {_label(b, labels)}  |  after {_label(a, labels)}")
    return "\n".join(lines)


def _label(prediction: Prediction, labels: Sequence[str]) -> str:
    if prediction.label is None:
        return "FAILED"
    return f"{labels[prediction.label]} (p={_probabilities(prediction.scores)[prediction.label]:.2f})"


def _probabilities(scores: Sequence[float]) -> list[float]:
    """Head scores are already probabilities; prompt log-likelihoods are normalised over the labels."""
    if all(0.0 <= s <= 1.0 for s in scores) and abs(sum(scores) - 1.0) < 1e-3:
        return list(scores)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return [w / sum(weights) for w in weights]


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")
