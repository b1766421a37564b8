"""What a sweep is: its axes and cells (each an ordinary run), what each cell came to, and the
manifest saved next to its outputs so `bench report --sweep NAME` can rebuild its tables later.
Planning and running live in commands/sweep.py, rendering in report/sweep.py; both read these."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artefacts import parsed
from harness.compare.paired import Comparison, TextComparison
from harness.errors import BenchError
from harness.report.formats import show
from harness.store import StageRecord, atomic_write

Row = Comparison | TextComparison
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")


@dataclass(frozen=True)
class Axis:
    key: str  # a run option (lora_rank, lr, method, ...), a task option (labels), `model` or `freeze`
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    values: tuple[tuple[str, Any], ...]  # (axis key, value) in axis order
    run_id: str

    @property
    def label(self) -> str:
        return " ".join(f"{key}={show(value)}" for key, value in self.values)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep is, independent of its results: saved as a manifest next to its outputs so
    `bench report --sweep NAME` can rebuild the table and heatmap from the store later."""

    name: str
    task: str
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    metric: str | None = None
    # run id -> why that cell failed in the last sweep that ran it (a diverged loss does not
    # become "incomplete" in a later report)
    failures: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "task": self.task, "metric": self.metric, "failures": self.failures,
                           "axes": [{"key": a.key, "values": list(a.values)} for a in self.axes],
                           "cells": [{"values": [list(pair) for pair in c.values], "run_id": c.run_id}
                                     for c in self.cells]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SweepPlan:
        data = json.loads(text)
        return cls(data["name"], data["task"], tuple(Axis(a["key"], tuple(a["values"])) for a in data["axes"]),
                   tuple(Cell(tuple((k, v) for k, v in c["values"]), c["run_id"]) for c in data["cells"]),
                   data.get("metric"), dict(data.get("failures") or {}))


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    records: dict[str, StageRecord] = field(default_factory=dict)
    rows: tuple[Row, ...] = ()
    error: str = ""


def sweeps_dir(root: Path) -> Path:
    return root / "sweeps"


def save_plan(root: Path, plan: SweepPlan) -> Path:
    path = sweeps_dir(root) / f"{plan.name}.json"
    atomic_write(path, plan.to_json())
    return path


def load_plan(root: Path, name: str) -> SweepPlan:
    name = name.removesuffix(".json")
    path = sweeps_dir(root) / f"{name}.json"
    if not SWEEP_NAME.match(name) or not path.is_file():
        known = sorted(p.stem for p in sweeps_dir(root).glob("*.json")) if sweeps_dir(root).is_dir() else []
        raise BenchError(f"no sweep {name!r} under {sweeps_dir(root)}" + (f"; sweeps: {', '.join(known)}" if known
                                                                          else "; run `bench sweep` first"))
    return parsed(path, SweepPlan.from_json, f"restore it from a copy, or re-run the `bench sweep` that made {name} "
                                             "(its complete cells are skipped)")
