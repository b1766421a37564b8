"""`bench export --to DIR`: the leaderboard, the before/after rows and (when stored) the judge
table, each as CSV and markdown; classification runs' per-class scores as CSV. No model is loaded."""
from __future__ import annotations

import argparse
from typing import Any

from harness.commands.common import add_selection, open_store, output_path
from harness.commands.report import selected
from harness.errors import BenchError

NAME = "export"


def add_parser(commands: Any) -> None:
    export = commands.add_parser(NAME, help="write the leaderboard and before/after tables (and the judge table) "
                                            "as CSV and markdown, per-class scores as CSV, to a folder")
    add_selection(export)
    export.add_argument("--to", required=True, help="folder to create/fill (no '..' components)")


def run(args: argparse.Namespace) -> int:
    # lazy: the store and the tables (sqlite3, numpy) stay out of `bench --help`
    from harness.report.judge import judge_csv, judge_markdown, judge_notes, judge_table, stored_judgments
    from harness.compare.paired import Comparison
    from harness.report.leaderboard import leaderboard, leaderboard_csv, leaderboard_markdown
    from harness.report.run_tables import csv_table, markdown_table, per_class_csv
    from harness.report.notes import data_notes, table_notes
    from harness.store import atomic_write

    target = output_path("--to", args.to)
    if target.exists() and not target.is_dir():
        raise BenchError(f"--to {args.to} exists and is not a folder")
    store = open_store(args.results)
    try:
        _, rows = selected(store, args)
        entries = leaderboard(store, rows)
        files = {"leaderboard.csv": leaderboard_csv(entries),
                 "leaderboard.md": "# Leaderboard\n\n" + leaderboard_markdown(entries),
                 "comparisons.csv": csv_table(rows, data_notes(store, rows)),
                 "comparisons.md": "# Before / after fine-tuning\n\n" + markdown_table(rows, table_notes(store, rows))}
        if any(isinstance(row, Comparison) for row in rows):
            files["per_class.csv"] = per_class_csv(store, rows)
        judgments = stored_judgments(store, [row.run_id for row in rows])
        if judgments:
            files["judge.md"] = "# LLM judge\n\n" + judge_markdown(judge_table(judgments), judge_notes(judgments))
            files["judge.csv"] = judge_csv(judgments)
        for name, text in files.items():
            atomic_write(target / name, text)
            print(target / name)
    finally:
        store.close()
    return 0
