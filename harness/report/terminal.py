"""What a finished `bench run` or `bench rescore` prints: the before/after table and a few sample
predictions on stdout, and the same table saved as markdown and CSV under results/tables/."""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

from harness.compare.paired import Comparison, LmEvalComparison, TextComparison
from harness.faults import reached
from harness.report.formats import to_markdown
from harness.report.notes import score_notes
from harness.report.run_tables import PER_CLASS_TITLE, csv_table, markdown_table, per_class_table
from harness.report.samples import example_texts, sample_outputs, sample_predictions
from harness.store import Store, atomic_write
from harness.task.spec import TaskSpec


def print_and_save(store: Store, spec: TaskSpec, rows: Sequence[Comparison | TextComparison], splits: Any,
                   seconds: float) -> str:
    """A finished `bench run`/`rescore`: the before/after table and sample predictions on stdout,
    the same table as markdown and CSV under results/tables/; returns the tables' name."""
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
            print(sample_predictions(store, row, spec.kind.answer_names(), texts) + "\n")
        else:
            print(sample_outputs(store, row, texts, references) + "\n")
    name = f"{spec.key}__" + hashlib.sha256("|".join(r.run_id + r.baseline for r in rows).encode()).hexdigest()[:8]
    atomic_write(store.root / "tables" / f"{name}.md", f"# {spec.key}: before / after fine-tuning\n\n{table}")
    reached("report-written", 1)
    atomic_write(store.root / "tables" / f"{name}.csv", csv_table(rows, {row.run_id: splits.notes for row in rows}))
    print(f"tables: {store.root / 'tables' / name}.md and .csv   wall time {seconds:.1f} s")
    return name
