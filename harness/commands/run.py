"""`bench run TASK --models A,B`: baseline, fine-tune and re-evaluate each model, then the paired
before/after table (and, with --judge, the LLM judge's table)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from harness.commands.common import (
    Parser,
    add_run_flags,
    add_task_arguments,
    add_training_arguments,
    log,
    overrides,
    task_options,
)
from harness.commands.experiment import run_file
from harness.commands.judge import Judging, add_judge_options, check_judgeable, settings_from
from harness.errors import BenchError
from harness.options import RunConfig, csv_list
from harness.task.registry import get_task

if TYPE_CHECKING:
    from harness.run.runner import PlannedRun
    from harness.store import Store

NAME = "run"
AfterRun = Callable[[str, RunConfig, dict[str, Any]], None]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(NAME, help="baseline, fine-tune and re-evaluate each model; print the before/after "
                                 "table", description="Options can come from a file: bench run --config exp.yaml "
                                 "(keys are the options' names, plus task and models; flags typed here override it). "
                                 "Every run folder keeps the config.yaml that re-runs it.")
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--models", "--model", type=csv_list, required=True,
                        help="comma-separated aliases, hub ids or local folders")
    add_training_arguments(parser)
    add_judge_options(parser, required=False)
    add_run_flags(parser, "lm_eval")


def run(args: argparse.Namespace) -> int:
    # lazy: the engine (pandas, sqlite3, torch on use) stays out of `bench --help`
    from harness.distributed import join, leave
    from harness.loggers import check_loggers
    from harness.report.terminal import print_and_save
    from harness.run.resume import settle_stored_runs
    from harness.run.runner import Runner, plan
    from harness.store import Store, results_dir
    from harness.task.data import data_dir_from

    started = time.perf_counter()
    loggers = check_loggers(args.log_to)
    spec = get_task(args.task, **task_options(args))
    data_dir = data_dir_from(args.data_dir)
    planned = plan(spec, list(dict.fromkeys(args.models)), overrides(args), args.preset)  # each model once
    judge_settings = settings_from(args)
    if judge_settings is not None:
        check_judgeable(spec)
    launcher = join()  # torchrun's process group, once every input is checked (one process without it)
    if not launcher.is_main:
        try:
            return run_other_rank(spec, planned, results_dir(args.results), data_dir, launcher)
        finally:
            leave()
    store = Store(results_dir(args.results))
    judging = None
    try:
        judging = Judging(judge_settings, store, log) if judge_settings else None  # a bad spec fails here
        runner = Runner(spec, store, data_dir, log, launcher)
        runner.splits(planned[0].config)  # data problems surface before any model loads
        # every run's stored work checked against this data and config (or discarded) before any runs
        try:
            settle_stored_runs(store, [(item.run_id, item.config, runner.splits(item.config)) for item in planned],
                               force_new=args.force_new, log=log)
            write_run_files(store, planned)
        finally:
            launcher.barrier()  # the other ranks open the store read-only once it exists
        rows = []
        for item in planned:
            records = runner.run(item)
            after_run(loggers, store)(item.run_id, item.config, records)
            rows += compare_run(store, item.run_id, item.config, records)
        name = print_and_save(store, spec, rows, runner.splits(planned[0].config), time.perf_counter() - started)
        if judging is None:
            return 0
        failed = judge_all(judging, planned, spec, runner, store, name)
    finally:
        if judging is not None:
            judging.close()
        store.close()
        leave()
    if failed:
        print(f"error: {failed} of {len(planned)} runs were not judged (see the warnings above); the runs are "
              f"stored: judge them again with `bench judge {spec.key} --judge ...`", file=sys.stderr)
        return 1
    return 0


def run_other_rank(spec: Any, planned: Sequence[PlannedRun], results: Any, data_dir: Any, launcher: Any) -> int:
    """A rank other than 0: the same stages (its shard of each evaluation, its slice of each
    training batch), silently, on the store opened read-only; rank 0 writes, tabulates and judges."""
    from harness.run.runner import Runner
    from harness.store import Store

    store = Store(results, read_only=True)
    try:
        launcher.barrier()  # rank 0 has settled the stored runs and created the store
        runner = Runner(spec, store, data_dir, lambda _: None, launcher)
        for item in planned:
            runner.run(item)
    finally:
        store.close()
    return 0


def judge_all(judging: Judging, planned: Sequence[PlannedRun], spec: Any, runner: Any, store: Store,
              name: str) -> int:
    """Judged after every model has trained and its table is out: a judge that fails (a bad key,
    a server down) costs the judgments, not the other models' runs. Returns how many failed."""
    from harness.report.judge import print_judge_table  # sqlite3 (store): keeps `bench --help` light

    judged, failed = [], 0
    for item in planned:
        try:
            judged.append(judging.judge_run(item.run_id, spec, runner.splits(item.config).eval))
        except BenchError as exc:
            failed += 1
            print(f"warning: {item.run_id} was not judged: {exc}", file=sys.stderr)
    print_judge_table([record for record in judged if record], store, name)
    return failed


def run_parser() -> argparse.ArgumentParser:
    """`bench run`'s own parser: its options are the keys of a run's config.yaml."""
    parser = Parser(prog="bench run")
    add_arguments(parser)
    return parser


def write_run_files(store: Store, planned: Sequence[PlannedRun]) -> None:
    """Each planned run's folder gets the config.yaml that re-runs it (`bench run --config ...`),
    once every input has been checked and before its first stage."""
    from harness.store import atomic_write  # lazy: sqlite3 stays out of `bench --help`

    command = run_parser()
    for item in planned:
        store.run_config(item.run_id)  # the store opens first: an unusable one fails before any run folder exists
        atomic_write(store.run_dir(item.run_id) / "config.yaml", run_file(item, command))


def compare_run(store: Store, run_id: str, config: RunConfig, records: dict[str, Any]) -> list[Any]:
    from harness.compare.paired import compare  # lazy: numpy and sqlite3 stay out of `bench --help`

    return compare(store, run_id, config.to_dict(), records)


def after_run(loggers: Sequence[str], store: Store) -> AfterRun:
    """What happens after each run, besides the store: the optional `--log-to` loggers."""
    def after(run_id: str, config: RunConfig, records: dict[str, Any]) -> None:
        if loggers:
            from harness.loggers import log_run  # lazy: tensorboard/wandb only when asked for

            log_run(loggers, store.root, run_id, config, records, store.curves(run_id))

    return after
