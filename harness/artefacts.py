"""Reading back what bench stored, and writing it, with the disk's failures said in one line.

Every stored artefact (JSON and JSONL files, JSON in the store's rows, safetensors weights) is read
through here: a truncated or hand-edited one raises `DamagedFile`, a BenchError naming the file and
what to do, instead of a JSONDecodeError or SafetensorError traceback. Writes that do not go
through `store.atomic_write` (safetensors, save_pretrained) run inside `writing()`, which turns a
full or read-only disk, however the library reports it, into the same kind of line.
"""
from __future__ import annotations

import errno
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from harness.errors import BenchError

T = TypeVar("T")

# What the machine, not bench, is to blame for: said in one line.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                         errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EIO})
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
# safetensors (Rust) reports an I/O failure as text only: "I/O error: No space left on device (os error 28)"
RUST_OS_ERROR = re.compile(r"I/O error: (?P<reason>.+?) \(os error (?P<code>\d+)\)")


class DamagedFile(BenchError):
    """A stored file (or row) that cannot be read back: `where` and `reason` for logs, and a message
    that adds what to do."""

    def __init__(self, where: str, reason: str, fix: str):
        super().__init__(f"{where} is damaged ({reason}): {fix}")
        self.where, self.reason = where, reason


def disk_advice(code: int | None) -> str:
    """What to do about a write the disk refused, by errno ('' when there is nothing to add)."""
    if code in FULL:
        return "free space there (or pass --results DIR on another disk) and re-run the same command: " \
               "completed stages are kept"
    if code in NOT_WRITABLE:
        return "that location is not writable: pass --results DIR (or --out/--to) on a writable disk"
    return ""


def disk_message(reason: str, path: Path | str | None, code: int | None) -> str:
    """`No space left on device: PATH; free space there ...`."""
    text = f"{reason}: {path}" if path else reason
    advice = disk_advice(code)
    return f"{text}; {advice}" if advice else text


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Run a write of `path` (a file or a folder being filled): a full, read-only or otherwise
    refusing disk becomes one BenchError naming it, whether it came as OSError or as safetensors'
    SafetensorError wrapping the OS error. Anything else (a bug) keeps its traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise BenchError(disk_message(exc.strerror or str(exc), exc.filename or path, exc.errno)) from None
    except Exception as exc:
        found = RUST_OS_ERROR.search(str(exc)) if type(exc).__name__ == "SafetensorError" else None
        if found is None:
            raise
        raise BenchError(disk_message(found["reason"], path, int(found["code"]))) from None


def parsed(path: Path, parse: Callable[[str], T], fix: str) -> T:
    """`parse` of the file's text; a file that is not UTF-8, does not parse, or lacks what `parse`
    looks up (ValueError, KeyError, TypeError, IndexError) is a DamagedFile naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFile(str(path), f"not UTF-8 text at byte {exc.start}", fix) from None
    except IsADirectoryError:
        raise DamagedFile(str(path), "a folder where a file belongs", fix) from None
    try:
        return parse(text)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DamagedFile(str(path), _reason(exc), fix) from None


def read_json(path: Path, fix: str) -> Any:
    return parsed(path, json.loads, fix)


def read_jsonl(path: Path, fix: str) -> list[Any]:
    """One JSON value per non-blank line; a bad line (a file cut short) is named by its number."""
    def parse(text: str) -> list[Any]:
        values = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    values.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"line {number}: {_reason(exc)}") from None
        return values

    return parsed(path, parse, fix)


def stored_json(text: str | None, where: str, fix: str) -> Any:
    """A JSON column of a store row (`where` says which): one edited by hand or damaged is a
    DamagedFile naming the row."""
    try:
        return json.loads(text) if text is not None else None
    except (ValueError, TypeError) as exc:
        raise DamagedFile(where, _reason(exc), fix) from None


def check_safetensors_file(path: Path, fix: str) -> None:
    """The file's header parses and its tensors cover the file exactly (what a truncated or
    overwritten weights file fails): read from the header alone, no weights loaded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except OSError:
        raise
    except Exception as exc:  # SafetensorError, with only its text to tell what is wrong
        raise DamagedFile(str(path), f"not a whole safetensors file: {_reason(exc)}", fix) from None


def _reason(exc: BaseException) -> str:
    message = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, KeyError):
        return f"no {message} field"
    return message or type(exc).__name__
