"""`bench report`: the before/after table and leaderboard (and a sweep's table, the judge's table)
from the store, as markdown, csv, LaTeX or a self-contained HTML page. No model is loaded.

Glue only: the tables are rendered by harness/report/ (and the sweep and judge tables by their
commands' modules); this picks the runs, calls them and prints or writes the result.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from harness.commands.common import add_selection, open_store, output_path
from harness.errors import BenchError
from harness.task.registry import get_task, task_names

NAME = "report"
REPORT_FORMATS = ("md", "csv", "html", "latex")


def add_parser(commands: Any) -> None:
    report = commands.add_parser(NAME, help="before/after table + leaderboard from the store (no model loaded)",
                                 description="md and latex print both tables; csv prints one (--table); html writes "
                                 "a self-contained report to results/reports/<name>.html (or --out), printing the path")
    add_selection(report)
    report.add_argument("--sweep", help="only this sweep's runs, with its table and heatmap (a name under "
                                        "results/sweeps)")
    report.add_argument("--format", default="md", choices=REPORT_FORMATS)
    report.add_argument("--table", choices=("comparison", "leaderboard", "sweep"), default="comparison",
                        help="csv: which table (default comparison, the before/after rows)")
    report.add_argument("--out", help="write to this file instead (html default: results/reports/<name>.html)")
    report.add_argument("--data-dir", help="datasets folder, to show example texts in html sample predictions; "
                                           "env BENCH_DATA_DIR")
    report.add_argument("--adjust", default="holm", metavar="holm|bh|none",
                        help="adjusted p column over each table's comparisons: holm (default, family-wise error), "
                             "bh (false discovery rate) or none")


def run(args: argparse.Namespace) -> int:
    # lazy: the store and the tables (sqlite3, numpy) stay out of `bench --help`
    from harness.report.judge import judge_section
    from harness.run.sweep_plan import load_plan
    from harness.run.sweep import results_from_store
    from harness.compare.stats import ADJUSTMENTS
    from harness.report.leaderboard import leaderboard

    if args.table == "sweep" and not args.sweep:
        raise BenchError("--table sweep needs --sweep NAME")
    if args.adjust not in ADJUSTMENTS:
        raise BenchError(f"--adjust {args.adjust}: unknown adjustment; use holm (default), bh or none")
    store = open_store(args.results)
    try:
        plan = load_plan(store.root, args.sweep) if args.sweep else None
        runs, rows = selected(store, args, plan)
        # the cells' comparisons made once, in rows
        results = results_from_store(store, plan, rows) if plan else None
        entries = leaderboard(store, rows)
        judged = judge_section(store, [row.run_id for row in rows]) if args.format in ("md", "latex") else None
        out = args.out
        if args.format == "html":
            text, default = _html_report(store, args, runs, rows, plan, results)
            out = out or str(default)
        elif args.format == "csv":
            text = _csv_report(store, args.table, rows, entries, plan, results, args.adjust)
        elif args.format == "latex":
            text = _latex_report(store, rows, entries, judged, plan, results, args.adjust)
        else:
            text = _markdown_report(store, rows, entries, judged, plan, results, args.adjust)
        emit(text, out)
    finally:
        store.close()
    return 0


def _csv_report(store: Any, table: str, rows: list[Any], entries: Any, plan: Any, results: Any, adjust: str) -> str:
    from harness.report.leaderboard import leaderboard_csv  # lazy: see `run`
    from harness.report.run_tables import csv_table
    from harness.report.notes import data_notes

    return {"comparison": lambda: csv_table(rows, data_notes(store, rows), adjust),
            "leaderboard": lambda: leaderboard_csv(entries),
            "sweep": lambda: _sweep_text(plan, results, "csv")}[table]()


def _latex_report(store: Any, rows: list[Any], entries: Any, judged: Any, plan: Any, results: Any,
                  adjust: str) -> str:
    from harness.report.leaderboard import leaderboard_table  # lazy: see `run`
    from harness.report.run_tables import PER_CLASS_TITLE, comparison_tables, per_class_table
    from harness.report.notes import statistics_notes
    from harness.report.formats import to_latex

    tables = comparison_tables(rows, adjust)  # the p family, MDEs and clustering under the last one
    parts = [to_latex(table, "Before / after fine-tuning", statistics_notes(rows, adjust) if i == len(tables) - 1
                      else ()) for i, table in enumerate(tables)]
    if classes := per_class_table(store, rows):
        parts.append(to_latex(classes, PER_CLASS_TITLE))
    parts.append(to_latex(leaderboard_table(entries, adjust), "Leaderboard"))
    if judged:
        parts.append(to_latex(judged[0], "LLM judge", judged[1]))
    if plan:
        parts.append(_sweep_text(plan, results, "latex", adjust))
    return "% bench report: needs \\usepackage{booktabs}\n" + "\n".join(parts)


def _markdown_report(store: Any, rows: list[Any], entries: Any, judged: Any, plan: Any, results: Any,
                     adjust: str) -> str:
    from harness.report.judge import judge_markdown  # lazy: see `run`
    from harness.report.leaderboard import leaderboard_markdown
    from harness.report.run_tables import PER_CLASS_TITLE, markdown_table, per_class_table
    from harness.report.notes import table_notes
    from harness.report.formats import to_markdown

    parts = ["## Before / after fine-tuning\n\n" + markdown_table(rows, table_notes(store, rows), adjust),
             "## Leaderboard\n\n" + leaderboard_markdown(entries, adjust)]
    if classes := per_class_table(store, rows):
        parts.insert(1, f"## {PER_CLASS_TITLE}\n\n" + to_markdown(classes))
    if judged:
        parts.append("## LLM judge\n\n" + judge_markdown(*judged))
    if plan:
        parts.insert(0, f"## Sweep {plan.name}\n\n" + _sweep_text(plan, results, "md", adjust))
    return "\n".join(parts)


def selected(store: Any, args: argparse.Namespace, sweep: Any = None) -> tuple[list[Any], list[Any]]:
    """(runs, comparison rows) chosen by --runs / --task, within a sweep's cells if given; none is an error."""
    from harness.report.leaderboard import collect, select_runs  # lazy: see `run`

    chosen = select_runs(store, args.task, tuple(args.runs or ()))
    if sweep is not None:
        cells = {cell.run_id for cell in sweep.cells}
        chosen = [run for run in chosen if run["run_id"] in cells]
    rows = collect(store, chosen)
    if not rows:
        where = f" of sweep {sweep.name}" if sweep is not None else f" for task {args.task}" if args.task else ""
        if args.task and not chosen:
            check_task_name(args.task)
        evals = [run["run_id"] for run in chosen if run["method"] == "eval"]
        if evals and len(evals) == len(chosen):
            raise BenchError(f"{evals[0]} is a `bench eval` record (one evaluation, no before/after to compare): "
                             f"its metrics are in {store.run_dir(evals[0])}/eval/metrics.json")
        raise BenchError("no complete runs (baseline, fine-tune and fine-tuned evaluation) in the store" + where)
    return chosen, rows


def check_task_name(task: str) -> None:
    """--task of a report or export that matched no run: a name no task has is a typo, not an empty store."""
    if not any(task == name or task.startswith(name + "-") for name in task_names()):
        get_task(task)  # the registry's own "unknown task ...; did you mean" line


def _sweep_text(plan: Any, results: Any, fmt: str, adjust: str = "holm") -> str:
    from harness.report.sweep import over_seeds_table, sweep_csv, sweep_markdown, sweep_table  # lazy: see `run`
    from harness.report.formats import OVER_SEEDS_TITLE, to_latex

    if fmt == "csv":
        return sweep_csv(plan, results)
    table, pooled = sweep_table(plan, results, adjust), over_seeds_table(plan, results)
    if fmt != "latex":
        return sweep_markdown(table, pooled, adjust)
    text = to_latex(table, f"Sweep {plan.name}")
    return text if pooled is None else text + "\n" + to_latex(pooled, f"Sweep {plan.name}: {OVER_SEEDS_TITLE}")


def _html_report(store: Any, args: argparse.Namespace, runs: list[Any], rows: list[Any], plan: Any,
                 results: Any) -> tuple[str, Path]:
    """The page, and where it goes by default: results/reports/ + the sweep's name, the single
    run's id, or report__<task>__<hash of the run ids>."""
    from harness.report.sweep import sweep_section  # lazy: see `run`
    from harness.report.html import build_report, render
    from harness.task.data import data_dir_from

    data_dir = data_dir_from(args.data_dir)
    ids = sorted({row.run_id for row in rows})
    if plan:
        title, name, sweep = f"bench sweep {plan.name}", plan.name, sweep_section(plan, results)
    elif len(ids) == 1:
        title, name, sweep = f"bench run {ids[0]}", ids[0], None
    else:
        digest = hashlib.sha256("|".join(ids).encode()).hexdigest()[:8]
        title, sweep = f"bench report: {args.task or 'all tasks'}", None
        name = f"report__{args.task or 'all'}__{digest}"
    text = render(build_report(store, runs, rows, data_dir, title, sweep, args.adjust))
    return text, store.root / "reports" / f"{name}.html"


def emit(text: str, out: str | None) -> None:
    """Print, or write to `out` and print its path."""
    from harness.store import atomic_write  # lazy: sqlite3 stays out of `bench --help`

    if out is None:
        print(text, end="")
        return
    atomic_write(output_path("--out", out), text)
    print(out)
