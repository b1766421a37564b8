"""What is said under a before/after table: the p-value family, each row's minimum detectable
effect and clustering, the data's provenance, and the scores' context (majority class, collapsed
answers, BLEU's parts). Read from the comparisons and the store; nothing is computed here."""
from __future__ import annotations

import math
from typing import Any, Sequence

from harness.compare.paired import Comparison, TextComparison
from harness.compare.stats import ADJUSTMENTS
from harness.report.formats import baseline_stage, format_score, method_label
from harness.store import Store

Row = Comparison | TextComparison


def family_note(count: int, adjust: str, what: str = "before/after comparisons in this report") -> str:
    """The sentence under a table with an adjusted p column: which adjustment, over what family."""
    if adjust == "none":
        return f"p: not adjusted for multiple comparisons (--adjust none); {count} {what}"
    return f"p adj: {ADJUSTMENTS[adjust]} over a family of the {count} {what}"


def mde_note(row: Row) -> str:
    """One row's minimum detectable effect, in words."""
    mde = "n too small for any" if math.isnan(row.mde) else f"±{format_score(row.mde, row.delta_name)}"
    return (f"MDE {row.model} {method_label(row)} vs {row.baseline}: smallest Δ{row.delta_name} detectable at 80% "
            f"power, α 0.05, given n {row.n} and the observed {row.mde_basis}: {mde}")


def clustering_note(row: Row) -> str:
    """How a row's CIs and paired test treat items that share a cluster, in words."""
    return f"CIs and p, {row.model} {method_label(row)} vs {row.baseline}: {row.clustering}"


def statistics_notes(rows: Sequence[Row], adjust: str) -> list[str]:
    """What the p and Δ columns need said: the adjustment family, every row's MDE, and how its
    errors treat clustered items (for tasks that declare clusters)."""
    if not rows:
        return []
    return [family_note(len(rows), adjust), *(mde_note(row) for row in rows if row.mde_basis),
            *(clustering_note(row) for row in rows if row.clustering)]


def data_notes(store: Store, rows: Sequence[Row]) -> dict[str, tuple[str, ...]]:
    """Run id -> the data provenance its fine-tuned stage recorded (carved splits, sample sizes)."""
    notes = {}
    for run_id in dict.fromkeys(row.run_id for row in rows):
        record = store.stage(run_id, "finetuned")
        notes[run_id] = tuple(record.info.get("data_notes", ())) if record else ()
    return notes


def score_notes(store: Store, rows: Sequence[Row]) -> list[str]:
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


def table_notes(store: Store, rows: Sequence[Row]) -> list[str]:
    """Everything said under a before/after table of stored runs: data provenance, then score context."""
    return flat_notes(rows, data_notes(store, rows)) + score_notes(store, rows)


def flat_notes(rows: Sequence[Row], notes: dict[str, tuple[str, ...]]) -> list[str]:
    """The notes under a table of several runs: each once, prefixed by its task."""
    by_task: dict[str, dict[str, None]] = {}
    for row in rows:
        for note in notes.get(row.run_id, ()):
            by_task.setdefault(row.task, {})[note] = None
    return [f"{task}: {note}" for task, task_notes in by_task.items() for note in task_notes]
