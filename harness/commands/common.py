"""What several commands share: the parser class, the flags derived from RunConfig's declarations
(harness/options.py), the options given -> the overrides `resolve` takes, and the read-only store.

Light at import (argparse and harness.options only): every command module imports this, and
`bench --help` imports every command module.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import BenchError
from harness.options import TASK_OPTION_FLAGS, TASK_OPTIONS, RunConfig, csv_list, flags, recorded_task_options
from harness.progress import log as progress_log
from harness.task.registry import parse_task_options

if TYPE_CHECKING:
    from harness.store import Store


class Parser(argparse.ArgumentParser):
    """An argparse parser that takes no abbreviations, and its subcommands' parsers too (argparse
    builds those of the parent's class): a prefix (`--model` for `--models`) must not silently pick
    an option, nor change meaning when a longer option is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})


def add_run_flags(parser: argparse.ArgumentParser, group: str) -> None:
    """The flags of RunConfig's fields in `group`, as their declarations say. A flag not typed is
    None (not given: `resolve` fills it in), except where the field declares its default the flag's."""
    for name, flag in flags(group):
        spellings = flag.spellings or (f"--{name.replace('_', '-')}",)
        default = RUN_DEFAULTS[name] if flag.flag_default else None
        if RUN_TYPES[name] == "bool":
            parser.add_argument(*spellings, dest=name, action="store_true", default=default, help=flag.help)
        else:
            parser.add_argument(*spellings, dest=name, type=flag.parser, default=default, help=flag.help)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The task, where data and results live, the options every run-like command takes (run, sweep,
    eval, export-task) and the task's own options."""
    parser.add_argument("task", help="task name (see `bench list`)")
    parser.add_argument("--data-dir", help="local datasets folder (one subfolder per dataset); env BENCH_DATA_DIR")
    parser.add_argument("--results", help="results folder (SQLite store + run folders); env BENCH_RESULTS; default ./results")
    for name, (convert, text) in TASK_OPTION_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=None if convert is str else convert, help=text)
    parser.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                        help="an option of a task plugin's own (a keyword argument of its factory), e.g. "
                             "--task-option column=title; repeatable; a grid axis in sweeps as KEY=V1,V2")
    add_run_flags(parser, "common")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow models whose repository ships its own Python code (off: such models are refused)")
    parser.add_argument("--force-new", action="store_true",
                        help="start the run(s) over: discard what the store holds of them (stages, checkpoint, "
                             "training state) instead of resuming; needed when the data files changed since")
    add_quiet_option(parser)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `run` and `sweep` (a sweep's fixed settings; any of them can be a grid axis)."""
    parser.add_argument("--config", metavar="FILE", help="experiment file (YAML, or TOML for .toml): the task, models, "
                        "any option by name (lora_rank: 8), for sweeps a grid: {lr: [1e-4, 5e-5]}; flags override it")
    parser.add_argument("--log-to", type=csv_list,
                        help="also log curves and metrics to tensorboard and/or wandb (optional)")
    add_run_flags(parser, "training")
    add_run_flags(parser, "serving")


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or progress lines on stderr (errors, warnings and tables still show)")


def add_selection(parser: argparse.ArgumentParser) -> None:
    """Which stored runs a report or export covers."""
    parser.add_argument("--task", help="only this task (a name such as goemotions matches all its variants)")
    parser.add_argument("--runs", type=csv_list, help="only these run ids (comma-separated)")
    parser.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line (None: not given), as `resolve` takes them. The
    preset is not one: `plan` gets it on its own."""
    values = {name: getattr(args, name, None) for name, flag in flags() if name != "preset"}
    values["lm_eval"] = values["lm_eval"] or None
    values["trust_remote_code"] = getattr(args, "trust_remote_code", False) or None
    values["task_options"] = recorded_task_options(task_options(args))
    return values


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given: the flagged ones (--labels, ...) and a plugin's own (--task-option)."""
    named = {name: getattr(args, name) for name in TASK_OPTIONS if getattr(args, name, None) is not None}
    return {**named, **parse_task_options(args.task, args.task_option or ())}


def open_store(results: str | None) -> Store:
    """The store of a command that only reads it (report, export): opened read-only, so an archived
    store on a read-only disk reads, and nothing there is migrated or written."""
    from harness.store import Store  # lazy: sqlite3 stays out of `bench --help`

    return Store.existing(results, read_only=True)


def output_path(option: str, value: str) -> Path:
    """A path the user asked bench to write to, refused when it climbs out with '..'."""
    if ".." in Path(value).parts:
        raise BenchError(f"{option} {value}: '..' components are not allowed; give the path without them")
    return Path(value)


def log(message: str) -> None:
    progress_log(message)  # above any live progress bar


# Each field's declared default and annotation, for the flags that keep the default or switch on/off.
RUN_DEFAULTS = {item.name: item.default for item in dataclasses.fields(RunConfig) if item.default is not dataclasses.MISSING}
RUN_TYPES = {item.name: str(item.type) for item in dataclasses.fields(RunConfig)}
