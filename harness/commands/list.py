"""`bench list [tasks|models|methods]`: what can be named on a command line. Light: no engine
module is imported, so it answers instantly."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.backends.aliases import ALIASES
from harness.errors import BenchError
from harness.options import METHODS
from harness.task.registry import broken_plugins, get_task, task_names

NAME = "list"


def add_parser(commands: Any) -> None:
    listing = commands.add_parser(NAME, help="list tasks, model aliases and methods")
    listing.add_argument("what", nargs="?", choices=("tasks", "models", "methods"), help="only this list")


def run(args: argparse.Namespace) -> int:
    errors: list[str] = []
    if args.what in (None, "tasks"):
        print("tasks:")
        for name in task_names():
            try:
                print(f"  {name:<12} {get_task(name).description}")
            except BenchError as exc:  # one broken task is reported, and the others still listed
                print(f"  {name:<12} (cannot be built: see the error below)")
                errors.append(str(exc))
        errors += broken_plugins()
    if args.what in (None, "models"):
        print("models (aliases; any hub id or local folder also works):")
        for alias in ALIASES.values():
            print(f"  {alias.name:<14} {alias.hub_id:<40} {alias.note}")
    if args.what in (None, "methods"):
        print("methods: " + ", ".join(METHODS) + "   baselines: prompt, head   objectives: auto, head, lm")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors else 0
