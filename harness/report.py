"""Comparisons -> before/after tables (markdown, CSV) and a few sample predictions."""
from __future__ import annotations

import csv
import io
import math
from typing import Sequence

from harness.compare import Comparison, format_ci, format_p
from harness.store import Store
from harness.types import Prediction

COLUMNS = ("model", "method", "baseline", "n", "fail b/a", "acc before [95% CI]", "acc after [95% CI]",
           "Δacc [95% CI]", "McNemar p", "F1m before", "F1m after", "trainable", "base s", "train s",
           "tok/s", "peak MB")


def markdown_table(rows: Sequence[Comparison], notes: Sequence[str] = ()) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        cells = (r.model, r.method, r.baseline, str(r.n), f"{r.failures_before}/{r.failures_after}",
                 format_ci(r.accuracy_before, r.accuracy_before_ci), format_ci(r.accuracy_after, r.accuracy_after_ci),
                 format_ci(r.delta_accuracy, r.delta_ci, signed=True), format_p(r.p_value),
                 f"{r.f1_macro_before:.3f}", f"{r.f1_macro_after:.3f}",
                 f"{_count(r.trainable_params)} ({r.trainable_pct:.2f}%)", f"{r.baseline_seconds:.0f}",
                 f"{r.train_seconds:.0f}", f"{r.tokens_per_second:.0f}", f"{r.peak_memory_mb:.0f}")
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Comparison]) -> str:
    out = io.StringIO()
    if rows:
        fields = list(rows[0].as_dict())
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (list(v) if isinstance(v, tuple) else v) for k, v in row.as_dict().items()})
    return out.getvalue()


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
