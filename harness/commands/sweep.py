"""`bench sweep TASK --models M --grid lora_rank=2,4 lr=1e-4,5e-5`: the command's flags and its
call; the sweep itself (plan, cells, tables, heatmap) is harness/run/sweep.py, imported when
the command runs (it loads numpy and the store)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from harness.commands.common import add_run_flags, add_task_arguments, add_training_arguments, log, overrides, task_options
from harness.commands.run import after_run, write_run_files
from harness.options import TASK_OPTIONS, csv_list, grid_axes
from harness.run.launchers import add_launcher_options, check_launcher, launch
from harness.task.registry import task_option_type
from harness.task.registry import task_options as declared_options

NAME = "sweep"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(NAME, help="a grid of runs (--grid lora_rank=2,4 lr=1e-4,5e-5): table + heatmap",
                                 description="Every cell is an ordinary `bench run` in the store; re-running the same "
                                 "sweep skips what is complete. Example: bench sweep sst2 --models minilm "
                                 "--grid lora_rank=2,4,8 lr=1e-4,5e-5")
    add_task_arguments(parser)
    parser.add_argument("--models", "--model", type=csv_list, help="comma-separated models (or a model=A,B grid axis)")
    parser.add_argument("--grid", nargs="+", action="extend", required=True, metavar="KEY=V1,V2",
                        help="axes: any run option (lora_rank, lr, batch_size, method, ...), freeze=N (method "
                             "freeze:N), a task option (labels) or model; the heatmap uses the first two, seed "
                             "axes last (seed or train_seed axes add a mean ± sd table per setting)")
    parser.add_argument("--metric", help="heatmap/table metric: the fine-tuned headline (default), delta, before, "
                                         "or a metric name such as f1_macro")
    add_training_arguments(parser)
    add_run_flags(parser, "lm_eval")
    add_launcher_options(parser)


def run(args: argparse.Namespace) -> int:
    from harness.distributed import require_one_process

    require_one_process(NAME)
    # lazy: the sweep engine and the store (numpy, sqlite3, pandas) stay out of `bench --help`
    from harness.run.sweep import parse_grid, plan_sweep, prepare_runners
    from harness.run.sweep_plan import save_plan
    from harness.loggers import check_loggers
    from harness.run.resume import settle_stored_runs
    from harness.store import Store, results_dir
    from harness.task.data import data_dir_from

    started = time.perf_counter()
    loggers = check_loggers(args.log_to)
    check_launcher(args)
    given, options = overrides(args), task_options(args)
    own = {name: parameter for name, parameter in declared_options(args.task).items() if name not in TASK_OPTIONS}
    axes = parse_grid(args.grid, {**grid_axes(), **{name: task_option_type(p) for name, p in own.items()}},
                      {**given, **options, "models": args.models}, plugin_options=list(own))
    plan, planned = plan_sweep(args.task, axes, models=list(args.models or ()), overrides=given,
                               task_options=options, preset=args.preset, metric=args.metric)
    data_dir = data_dir_from(args.data_dir)
    store = Store(results_dir(args.results))
    try:
        log(f"sweep {plan.name}: {len(planned)} cells")
        runners = prepare_runners(planned, store, data_dir, log)
        settle_stored_runs(store, [(item.run.run_id, item.run.config, runners[item.spec.key].splits(item.run.config))
                                   for item in planned], force_new=args.force_new, log=log)
        write_run_files(store, [item.run for item in planned])
        save_plan(store.root, plan)  # before the first cell: an interrupted sweep can still be reported
        results = launch(args, plan, planned, runners, store, log, after_run(loggers, store))
        if results is None:  # --no-wait: the cells run on as jobs; `bench report --sweep` collects them
            return 0
        plan = dataclasses.replace(plan, failures={r.cell.run_id: r.error for r in results if r.error})
        save_plan(store.root, plan)  # with the failed cells' reasons, for later reports
        print_outputs(store, plan, results, data_dir, started)
    finally:
        store.close()
    failed = [result for result in results if result.error]
    if failed:
        print(f"{len(failed)} of {len(results)} cells failed: " + "; ".join(f"{r.cell.label}: {r.error}"
                                                                          for r in failed), file=sys.stderr)
        return 1
    return 0


def print_outputs(store: Any, plan: Any, results: Any, data_dir: Any, started: float) -> None:
    """The sweep's table on stdout; its files (md, csv, heatmap, html report) written and named."""
    from harness.report.sweep import metric_label, write_outputs  # lazy: see `run`

    table, section, html = write_outputs(store, plan, results, data_dir)
    print(f"\n## {plan.name}: {metric_label(results, plan.metric)} per cell\n\n{table}")
    if section.heatmap_png:
        print(section.heatmap_caption + "\n")
    if html is not None:
        print(f"report: {html}")
    folder = store.root / "sweeps"
    heatmap = f"heatmap: {folder / plan.name}.png   " if section.heatmap_png else ""
    print(f"tables: {folder / plan.name}.md and .csv   {heatmap}wall time {time.perf_counter() - started:.1f} s")
