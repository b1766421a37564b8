"""Live progress of long loops (evaluation, training, generation, judging, sweeps) on stderr.

The loops call one API and never learn where it goes:

    with progress("eval", total=len(examples), unit="ex") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch), counted={"tok": new_tokens}, loss=0.51)

`reporting(quiet=...)` (entered by the CLI around a command) decides what that shows:
- stderr is a terminal: rich bars that redraw in place, and when a bar ends its summary line
  stays in the scrollback;
- stderr is a file or pipe (CI, nohup, Slurm logs): a plain line at most every LINE_SECONDS or
  every 10% of the loop, whichever comes first, plus one at the end; never a carriage return;
- quiet, or no `reporting` at all (library use, tests calling a backend directly): nothing.

`scope(name)` names the bars opened inside it (the pipeline's stage: "baseline:prompt eval"), and
`scope(name, transient=True)` marks work whose outcome the caller logs itself (validation during
training): its bars show on a terminal while they run and write no lines to a log.

`log(message)` is the one way to print a stderr line while a bar may be live: on a terminal it
goes above the bars (rich's console), elsewhere it is a plain print.

State lives in two context variables, set and reset by the context managers above, so nothing
outlives the command that set it; rich is imported only when a bar is drawn on a terminal.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, TextIO

# A log line at least this often (seconds) while a loop runs, or at each further 10% of it.
LINE_SECONDS = 30.0
LINE_FRACTION = 0.1


@dataclass(frozen=True)
class _Scope:
    name: str = ""
    transient: bool = False


_reporter: contextvars.ContextVar["_Reporter | None"] = contextvars.ContextVar("bench_progress", default=None)
_scope: contextvars.ContextVar[_Scope] = contextvars.ContextVar("bench_progress_scope", default=_Scope())


def duration(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"
    return str(value)


def _rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


class Bar:
    """One loop's count, rates and latest values. `advance` is all a loop calls."""

    def __init__(self, label: str, total: int | None, unit: str):
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.skipped = 0  # counted as done without work (resumed steps, stored sweep cells): no rate
        self.counted: dict[str, float] = {}
        self.shown: dict[str, Any] = {}
        self.started = time.perf_counter()

    def advance(self, k: int = 1, *, counted: Mapping[str, float] | None = None, **shown: Any) -> None:
        """`k` more units done; `counted` adds to running totals shown as rates (tokens -> tok/s);
        `shown` replaces the latest values shown as they are (loss, lr, cache hits)."""
        self.done += k
        for name, amount in (counted or {}).items():
            self.counted[name] = self.counted.get(name, 0) + amount
        self.shown.update({name: value for name, value in shown.items() if value is not None})
        self._changed()

    def skip(self, k: int = 1, **shown: Any) -> None:
        """`k` units that were already done (a resume): they count, but not towards the rate."""
        self.skipped += k
        self.advance(k, **shown)

    def set(self, **shown: Any) -> None:
        """Update the values shown without advancing."""
        self.shown.update({name: value for name, value in shown.items() if value is not None})
        self._changed()

    def _changed(self) -> None:  # the reporters' bars redraw or write a line here
        pass

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def status(self, final: bool = False) -> str:
        """`240/872 ex (28%)  4.1 ex/s  812 tok/s  loss 0.512  ETA 2m34s`; the end line says `in 3m31s`."""
        seconds = self.elapsed
        worked = self.done - self.skipped
        parts = [f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done // self.total}%)"
        if worked > 0 and seconds > 0:
            parts.append(f"{_rate(worked / seconds)} {self.unit}/s")
        parts += [f"{_rate(amount / seconds)} {name}/s" for name, amount in self.counted.items() if seconds > 0]
        parts += [f"{name.replace('_', ' ')} {_number(value)}" for name, value in self.shown.items()]
        if final:
            parts.append(f"in {duration(seconds)}")
        elif self.total is not None and worked > 0 and self.done < self.total:
            parts.append(f"ETA {duration((self.total - self.done) * seconds / worked)}")
        return "  ".join(parts)


class _Reporter:
    """Where bars go: lines on a stream, or rich bars on a terminal."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.open: list[Bar] = []

    def bar(self, label: str, total: int | None, unit: str, transient: bool) -> Bar:
        raise NotImplementedError

    def close(self, bar: Bar) -> None:
        raise NotImplementedError

    def log(self, message: str) -> None:
        print(message, file=self.stream, flush=True)


class _Lines(_Reporter):
    """Plain lines for logs: at most one per LINE_SECONDS or per LINE_FRACTION of the loop, and one at
    the end; a transient bar writes none."""

    def bar(self, label: str, total: int | None, unit: str, transient: bool) -> Bar:
        reporter = self
        last = {"time": time.perf_counter(), "step": 0}

        class LineBar(Bar):
            def _changed(self) -> None:
                if transient or (self.total is not None and self.done >= self.total):
                    return  # the end line says it
                now = time.perf_counter()
                step = int(self.done / (self.total * LINE_FRACTION)) if self.total else 0
                if now - last["time"] >= LINE_SECONDS or step > last["step"]:
                    last["time"], last["step"] = now, step
                    reporter.log(f"  {self.label}: {self.status()}")

        made = LineBar(label, total, unit)
        made.transient = transient  # type: ignore[attr-defined]
        return made

    def close(self, bar: Bar) -> None:
        if not getattr(bar, "transient", False) and (bar.done or bar.total):
            self.log(f"  {bar.label}: {bar.status(final=True)}")


class _Terminal(_Reporter):
    """rich bars, redrawn in place; live only while a bar is open. A finished bar leaves its summary
    line (a transient one leaves nothing)."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.progress: Any = None
        self.tasks: dict[int, Any] = {}

    def _live(self) -> Any:
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
            from rich.table import Column
            from rich.text import Text

            class Status(ProgressColumn):
                """The only column a narrow terminal shortens: cut at its end, never wrapped."""

                def render(self, task: Any) -> Text:
                    return Text(task.fields.get("status", ""), no_wrap=True, overflow="ellipsis")

            # stdout is not redirected: the tables stay on stdout; other stderr prints go above the bars.
            self.progress = Progress(TextColumn("  {task.description}", table_column=Column(no_wrap=True)),
                                     BarColumn(bar_width=24, table_column=Column(no_wrap=True)), Status(),
                                     console=Console(file=self.stream), refresh_per_second=4,
                                     redirect_stdout=False, redirect_stderr=True)
            self.progress.start()
        return self.progress

    def bar(self, label: str, total: int | None, unit: str, transient: bool) -> Bar:
        live = self._live()
        task = live.add_task(label, total=total, status="")

        class TerminalBar(Bar):
            def _changed(self) -> None:
                live.update(task, completed=self.done, status=self.status())

        made = TerminalBar(label, total, unit)
        made.transient = transient  # type: ignore[attr-defined]
        self.tasks[id(made)] = task
        made._changed()
        return made

    def close(self, bar: Bar) -> None:
        live = self.progress
        live.remove_task(self.tasks.pop(id(bar)))
        live.refresh()  # the live area drops the bar now, before its summary line is printed above it
        if not getattr(bar, "transient", False) and (bar.done or bar.total):
            self.log(f"  {bar.label}: {bar.status(final=True)}")
        if not self.tasks:
            live.stop()
            self.progress = None

    def log(self, message: str) -> None:
        if self.progress is None:
            super().log(message)
        else:  # above the live bars; never read as markup ("[cell 1/4]", "[smollm2]")
            self.progress.console.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)


@contextlib.contextmanager
def reporting(quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Show the progress of the loops run inside: bars on a terminal, lines in a log, nothing if quiet."""
    out = stream if stream is not None else sys.stderr
    terminal = bool(getattr(out, "isatty", lambda: False)())
    reporter = None if quiet else _Terminal(out) if terminal else _Lines(out)
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
        if isinstance(reporter, _Terminal) and reporter.progress is not None:
            reporter.progress.stop()  # an exception left bars open: leave the terminal clean


@contextlib.contextmanager
def scope(name: str, *, transient: bool = False) -> Iterator[None]:
    """Bars opened inside are labelled `name <label>`; transient ones write no log lines."""
    outer = _scope.get()
    token = _scope.set(_Scope(f"{outer.name} {name}".strip(), transient or outer.transient))
    try:
        yield
    finally:
        _scope.reset(token)


@contextlib.contextmanager
def progress(label: str, total: int | None = None, unit: str = "it") -> Iterator[Bar]:
    """A bar for one loop of `total` units (None: unknown); a bar that shows nothing when no
    `reporting` is active or it is quiet."""
    reporter = _reporter.get()
    where = _scope.get()
    if reporter is None:
        yield Bar(label, total, unit)
        return
    bar = reporter.bar(f"{where.name} {label}".strip(), total, unit, where.transient)
    try:
        yield bar
    finally:
        reporter.close(bar)


def log(message: str) -> None:
    """A stderr line that interleaves cleanly with live bars."""
    reporter = _reporter.get()
    if reporter is None:
        print(message, file=sys.stderr, flush=True)
    else:
        reporter.log(message)
