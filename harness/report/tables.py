"""Transitional: the names harness/cli.py still imports from here, which now live in the report
modules with one job each (formats, notes, run_tables, samples, terminal, sweep). Delete this file
once cli.py (and commands/report.py) import from those modules directly."""
from __future__ import annotations

from harness.report.formats import OVER_SEEDS_TITLE, to_latex, to_markdown
from harness.report.notes import data_notes, statistics_notes, table_notes
from harness.report.run_tables import (
    PER_CLASS_TITLE,
    comparison_tables,
    csv_table,
    markdown_table,
    per_class_csv,
    per_class_table,
)
from harness.report.terminal import print_and_save

__all__ = ["OVER_SEEDS_TITLE", "PER_CLASS_TITLE", "comparison_tables", "csv_table", "data_notes", "markdown_table",
           "per_class_csv", "per_class_table", "print_and_save", "statistics_notes", "table_notes", "to_latex",
           "to_markdown"]
