"""The one exception type users see: a message that names the problem and the fix."""
from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from typing import Iterable


class BenchError(Exception):
    """A user-facing error. The CLI prints `error: <message>` on one line and exits 2."""


def error_reason(exc: BaseException) -> str:
    """What a plugin's code raised, in one line: `Type: message (file line N)`, the line being where
    the traceback first leaves bench's engine and the import machinery, i.e. the plugin's own line
    (deeper frames are the libraries it called: pandas for a missing column, bench for a bad spec)."""
    engine = (Path(__file__).parent, Path(importlib.__file__).parent)
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<")
              and not any(Path(frame.filename).is_relative_to(folder) for folder in engine)]
    where = f" ({frames[0].filename} line {frames[0].lineno})" if frames else ""
    message = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """"; did you mean 'sst2'?" for a typo of a known name (`sst-2`, `SST2`: case, '-' and '_'
    aside, else the closest by difflib), or "" when nothing is close."""
    import difflib

    def plain(text: str) -> str:
        return text.lower().replace("-", "").replace("_", "")

    by_plain = {plain(option): option for option in known}
    match = plain(name) if plain(name) in by_plain else next(
        iter(difflib.get_close_matches(plain(name), list(by_plain), n=1)), None)
    return f"; did you mean {by_plain[match]!r}?" if match is not None else ""
