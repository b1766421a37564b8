"""Optional experiment loggers (`--log-to tensorboard,wandb`): after each run, its training curves
and final metrics go to TensorBoard (results/tb/<run_id>) and/or Weights & Biases.

The store stays the record; loggers are a view of it, written after the run from what the store
holds, so a resumed run logs exactly what a fresh one would. Both packages are optional: asking for
one that is not installed fails before any work, with the pip line that fixes it.
"""
from __future__ import annotations

import importlib.util
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BenchError
from harness.options import RunConfig
from harness.store import StageRecord

LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> the package it needs


def check_loggers(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate `--log-to` up front: known names, packages importable."""
    chosen = tuple(dict.fromkeys(names or ()))
    for name in chosen:
        if name not in LOGGERS:
            raise BenchError(f"unknown --log-to {name!r}; choose from: {', '.join(LOGGERS)}")
        if importlib.util.find_spec(LOGGERS[name]) is None:
            raise BenchError(f"--log-to {name} needs the {LOGGERS[name]} package: pip install {LOGGERS[name]}")
    return chosen


def log_run(names: Sequence[str], root: Path, run_id: str, config: RunConfig, records: dict[str, StageRecord],
            curves: Sequence[dict[str, Any]]) -> None:
    if "tensorboard" in names:
        to_tensorboard(root / "tb" / run_id, records, curves)
    if "wandb" in names:
        to_wandb(root, run_id, config.to_dict(), records, curves)  # wandb keeps a plain mapping


def final_metrics(records: dict[str, StageRecord]) -> dict[str, float]:
    """`stage/metric` -> value for every scalar metric of every stage (e.g. finetuned/accuracy)."""
    values = {}
    for stage, record in records.items():
        for name, entry in record.metrics.items():
            value = entry.get("value") if isinstance(entry, dict) else entry
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                values[f"{stage.replace(':', '_')}/{name}"] = float(value)
        values[f"{stage.replace(':', '_')}/seconds"] = float(record.seconds)
    return values


def curve_tag(name: str) -> str:
    """train/loss, train/lr; validation/f1_macro for the curves' val_* points."""
    return f"validation/{name[4:]}" if name.startswith("val_") else f"train/{name}"


def to_tensorboard(folder: Path, records: dict[str, StageRecord], curves: Sequence[dict[str, Any]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(folder, ignore_errors=True)  # rewritten whole: a resumed run must not log twice
    writer = SummaryWriter(log_dir=str(folder))
    try:
        last = 0
        for point in curves:
            step = int(point.get("step", 0))
            last = max(last, step)
            for name, value in point.items():
                if name != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(curve_tag(name), value, step)
        for name, value in final_metrics(records).items():
            writer.add_scalar(name, value, last)
    finally:
        writer.close()


def to_wandb(root: Path, run_id: str, config: dict[str, Any], records: dict[str, StageRecord],
             curves: Sequence[dict[str, Any]]) -> None:
    """Offline (files under results/wandb, `wandb sync` later) unless WANDB_MODE says otherwise or
    an API key is configured."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    (root / "wandb").mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bench"), name=run_id, config=config, mode=mode,
                     dir=str(root), job_type="bench-run", settings=wandb.Settings(console="off"))
    try:
        for point in curves:
            run.log({curve_tag(k): v for k, v in point.items() if k != "step"}, step=int(point.get("step", 0)))
        run.summary.update(final_metrics(records))
    finally:
        run.finish()
