"""`bench rescore RUN`: recompute a run's metrics from its stored outputs (no model is loaded)."""
from __future__ import annotations

import argparse
from typing import Any

from harness.run.rescore import rescore_command

NAME = "rescore"


def add_parser(commands: Any) -> None:
    rescore = commands.add_parser(NAME, help="recompute a run's metrics from its stored outputs (no model)")
    rescore.add_argument("run", help="run id (a folder name under results/runs)")
    rescore.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    rescore.add_argument("--data-dir", help="local datasets folder; env BENCH_DATA_DIR")


def run(args: argparse.Namespace) -> int:
    return rescore_command(args)
