"""A split's file in a local data dir: found, checked to be a readable file, read into a frame.

Only a split with no directory entry at all is missing (and may then be carved from another
split): a dangling or looping symlink, a directory or an unreadable file named like a split is a
broken split, and carving in its place would train or score on other rows than the user meant.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import BenchError

SUFFIXES = (".parquet", ".jsonl", ".csv")
_DANGLING = (errno.ENOENT, errno.ENOTDIR)


def split_file(folder: Path, split: str) -> Path | None:
    """`folder/<split>.<suffix>`, None when no entry of that name exists for any suffix; an entry
    that is there but cannot be read as a file, or two of them, is an error naming it."""
    entries = [folder / f"{split}{suffix}" for suffix in SUFFIXES if os.path.lexists(folder / f"{split}{suffix}")]
    if len(entries) > 1:  # which one is the data is the user's call, not a suffix order's
        names = ", ".join(f"{path.name}{_annotation(path)}" for path in entries)
        raise BenchError(f"{folder} has {len(entries)} files for the {split!r} split ({names}); "
                         "keep one of them (move the others out of the folder)")
    if not entries:
        return None
    path = entries[0]
    problem = unreadable_because(path)
    if problem is not None:
        raise BenchError(f"data file {path} {problem}; make it the {split!r} split's {path.suffix[1:]} file "
                         "or remove it")
    return path


def _annotation(path: Path) -> str:
    problem = unreadable_because(path)
    return f": {problem}" if problem else ""


def unreadable_because(path: Path) -> str | None:
    """Why the existing entry `path` cannot be read as a data file, or None when it can."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError as exc:
        if path.is_symlink() and exc.errno == errno.ELOOP:
            return f"is a symlink loop ({path.name} -> {os.readlink(path)} -> ...)"
        if path.is_symlink() and exc.errno in _DANGLING:
            target = os.readlink(path)
            chained = os.path.islink(os.path.join(path.parent, target))  # name the end of the chain too
            beyond = f", which leads to {os.path.realpath(path)}" if chained else ""
            return f"is a dangling symlink to {target}{beyond} (nothing is there)"
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):  # a pipe would block the read forever
        return "is not a regular file (a pipe, socket or device)"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def read_split_file(path: Path) -> pd.DataFrame:
    """The file's rows; a file that does not parse, or names a column twice, is an error naming it."""
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".jsonl":
            _refuse_repeated_keys(path)
            return pd.read_json(path, lines=True)
        _refuse_repeated_header(path)
        # keep_default_na=False: "", "NA", "None" and "null" are texts (an empty Alpaca input, a
        # sentence "NA"), not missing values
        return pd.read_csv(path, keep_default_na=False)
    except BenchError:
        raise
    except pd.errors.EmptyDataError:  # a 0-byte csv: said like an empty jsonl, not as a parse failure
        return pd.DataFrame()
    except Exception as exc:  # pyarrow, json and csv parsers each raise their own types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BenchError(f"cannot read {path}: {reason}; expected a valid {path.suffix[1:]} file") from None


def _refuse_repeated_header(path: Path) -> None:
    """pandas renames a second `label` column to `label.1`, so the task would silently read the
    first; the header row as written (same parser, no renaming) shows the repeat."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    repeated = [name for name, count in Counter(header.iloc[0].tolist()).items() if count > 1] if len(header) else []
    if repeated:
        raise BenchError(f"{path}: column {repeated[0]!r} appears more than once in the header row; "
                         "rename or drop the extra column(s)")


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise _RepeatedKey(next(key for key, count in Counter(keys).items() if count > 1))
    return dict(pairs)


def _refuse_repeated_keys(path: Path) -> None:
    """JSON keeps the last of two equal keys in an object: `{"label": 1, "label": 0}` would silently
    be a 0. A line that does not parse is left to pandas' reader, which names the problem."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line, object_pairs_hook=_unique_keys)
            except _RepeatedKey as repeat:
                raise BenchError(f"{path} line {number}: key {repeat.key!r} appears more than once in one object "
                                 "(JSON keeps only the last); keep one") from None
            except ValueError:
                return
