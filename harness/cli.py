"""`bench COMMAND ...`: argv -> the command's module -> exit code. A bad input (BenchError) is one
`error: ...` line and exit 2, with any credential from the environment masked out.

Every command module under harness/commands/ is imported here to build the parser, so each keeps
its heavy imports (torch, pandas, sqlite3, the engine) inside its `run`: `bench --help` and
`bench list` answer instantly."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from types import ModuleType
from typing import Sequence

from harness.artefacts import DISK_ERRNOS, disk_advice, disk_message
from harness.commands import compare, export, export_task, judge, power, push, report, rescore, run, sweep
from harness.commands import eval as evaluate
from harness.commands import list as listing
from harness.commands.common import Parser
from harness.commands.experiment import apply_file, config_path, merge_repeated, read_file
from harness.credentials import environment_secrets, mask
from harness.errors import BenchError
from harness.progress import reporting

# In `bench --help` order. Each has NAME, add_parser(subparsers) and run(args) -> exit code.
COMMANDS: tuple[ModuleType, ...] = (listing, run, sweep, evaluate, rescore, report, judge, compare, power,
                                    push, export_task, export)
BY_NAME = {command.NAME: command for command in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description="Zero-shot baseline -> fine-tune -> same eval again -> "
                    "paired before/after table. Example: bench run sst2 --models smollm2,minilm")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # Under torchrun every rank runs the command: rank 0 alone shows progress.
        with reporting(quiet=bool(getattr(args, "quiet", False)) or os.environ.get("RANK", "0") != "0"):
            return dispatch(args)
    except BenchError as exc:
        print(f"error: {masked(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed stages are stored; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`bench list | head -1`): stop quietly like any Unix tool, and point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a read-only or full disk, a folder where a file goes: one line, no traceback
        if exc.errno not in DISK_ERRNOS:  # anything else (a file bench expected, a bug) keeps its traceback
            if print_masked_traceback(exc):
                return 1
            raise
        print(f"error: {masked(os_error(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the store's disk filled up in the middle of a transaction
        if not store_failure(exc):
            if print_masked_traceback(exc):
                return 1
            raise  # SQL that is wrong (a bug) is not the store's disk: keep the traceback
        print(f"error: results store: {masked(str(exc))}{store_advice(exc)}", file=sys.stderr)
        return 2


def dispatch(args: argparse.Namespace) -> int:
    """The command's `run`; progress bars and lines (harness.progress) are set up by `main`."""
    return BY_NAME[args.command].run(args)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with `run`/`sweep --config FILE` read first: the file's values become the
    command's defaults, so flags typed here override them."""
    parser = build_parser()
    command = next(iter(argv), None)
    if command not in ("run", "sweep"):
        return parser.parse_args(argv)
    path = config_path(argv[1:])
    if path is None:
        return parser.parse_args(argv)
    subcommand = subcommands(parser)[command]
    repeated = apply_file(subcommand, path, read_file(path))
    args = parser.parse_args(argv)
    merge_repeated(args, repeated)
    if args.task is None:
        subcommand.error("the following arguments are required: task (or a `task:` key in the --config file)")
    return args


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def masked(text: str) -> str:
    """`text` without the value of any credential in the environment: the last line of defence,
    for an error raised outside the judge backends' own masking (harness.judging.backend.ask)."""
    return mask(text, *environment_secrets())


def print_masked_traceback(exc: BaseException) -> bool:
    """A crash's traceback that quotes a credential from the environment is printed masked (True);
    any other keeps the interpreter's own printing (False)."""
    text = "".join(traceback.format_exception(exc))
    hidden = masked(text)
    if hidden == text:
        return False
    print(hidden, end="", file=sys.stderr)
    return True


def store_failure(exc: Exception) -> bool:
    """An sqlite3 error the disk or another process caused (the store's unusable-file codes, busy,
    locked). sqlite3 is looked up, not imported: `bench --help` and `bench list` never load it, and
    only a command that did can raise its errors."""
    sqlite3 = sys.modules.get("sqlite3")
    code = getattr(exc, "sqlite_errorcode", None)
    if sqlite3 is None or not isinstance(exc, sqlite3.Error) or code is None:
        return False
    from harness.store import UNUSABLE_STORE  # lazy: only a command that opened the store gets here

    return (code & 0xFF) in UNUSABLE_STORE | {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def store_advice(exc: Exception) -> str:
    """What to do when the store's disk is full or read-only ('' for a busy or damaged store)."""
    import sqlite3  # lazy: see store_failure

    code = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EROFS}.get(
        getattr(exc, "sqlite_errorcode", 0) & 0xFF)
    return f"; {disk_advice(code)}" if code else ""


def os_error(exc: OSError) -> str:
    """`No space left on device: /results/runs/x/metrics.json; free space there ...`, not Python's
    `[Errno 28] ...`."""
    if not exc.strerror:
        return str(exc)
    paths = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    return disk_message(exc.strerror, paths or None, exc.errno)




if __name__ == "__main__":
    sys.exit(main())
