"""Two stores of the same `bench run` side by side: one process vs N (DDP), or DDP vs FSDP on N.

benchmarks/run_gpu.sh's ddp and fsdp sections run the same command into two results folders and
call this to print what each store holds: training tokens/s (global: every rank's tokens over the
training wall time, validation not in it), training seconds, steps, rank 0's peak GPU memory in the
finetune stage (each rank holds the same share under DDP and FSDP, so rank 0's peak is the peak per
GPU), and the final eval metric; then the speedup and scaling efficiency (speedup / extra
processes' factor) and whether the eval predictions of the two runs are the same, stage by stage
(same predicted label, largest score difference; training under N ranks reduces gradients in
another order and draws other dropout masks, so the fine-tuned scores differ a little and a near-tie
may flip; the baseline's predictions should not).

    python3 benchmarks/scaling.py A_RESULTS:PROCESSES:NAME B_RESULTS:PROCESSES:NAME
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Side:
    results: Path
    processes: int
    name: str

    @classmethod
    def parse(cls, text: str) -> Side:
        try:
            results, processes, name = text.split(":", 2)
            return cls(Path(results), int(processes), name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not RESULTS:PROCESSES:NAME") from None

    def connect(self) -> sqlite3.Connection:
        path = self.results / "bench.sqlite"
        if not path.is_file():
            raise SystemExit(f"error: no store at {path}: that run failed (see its output above)")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def stage_info(side: Side) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """stage -> (metrics, info) of the store's one run."""
    with side.connect() as db:
        rows = db.execute("SELECT stage, metrics, info FROM stages").fetchall()
    return {stage: (json.loads(metrics), json.loads(info)) for stage, metrics, info in rows}


def predictions(side: Side) -> dict[str, dict[int, tuple[Any, list[float], Any]]]:
    """stage -> idx -> (label, scores, output)."""
    found: dict[str, dict[int, tuple[Any, list[float], Any]]] = {}
    with side.connect() as db:
        for stage, idx, label, scores, output in db.execute(
                "SELECT stage, idx, label, scores, output FROM predictions"):
            found.setdefault(stage, {})[idx] = (label, json.loads(scores), output)
    return found


def main_metric(metrics: dict[str, Any]) -> str:
    """The stage's headline metric: stored as {"value": x, "ci": [...]} (or a bare number)."""
    values = {k: v.get("value") if isinstance(v, dict) else v for k, v in metrics.items() if k not in ("n", "failures")}
    numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not numbers:
        return "-"
    key = next((k for k in ("accuracy", "f1", "rougeL", "perplexity") if k in numbers), sorted(numbers)[0])
    return f"{key} {numbers[key]:.4f}"


def print_costs(sides: list[Side], stages: list[dict[str, tuple[dict, dict]]]) -> list[float]:
    print("| run | processes | train tokens/s | train s | steps | finetune peak MB per GPU | finetuned |")
    print("|---|---|---|---|---|---|---|")
    speeds = []
    for side, found in zip(sides, stages):
        _, info = found.get("finetune", ({}, {}))
        metrics, _ = found.get("finetuned", ({}, {}))
        speeds.append(float(info.get("tokens_per_second", 0.0)))
        print(f"| {side.name} | {side.processes} | {speeds[-1]:.0f} | {info.get('train_seconds', 0):.1f} | "
              f"{info.get('steps', '-')} | {info.get('peak_memory_mb', 0):.0f} | {main_metric(metrics)} |")
    return speeds


def print_agreement(a: Side, b: Side) -> None:
    ours, theirs = predictions(a), predictions(b)
    for stage in sorted(set(ours) | set(theirs)):
        left, right = ours.get(stage, {}), theirs.get(stage, {})
        shared = sorted(set(left) & set(right))
        same_label = sum(left[i][0] == right[i][0] and left[i][2] == right[i][2] for i in shared)
        gaps = [abs(x - y) for i in shared for x, y in zip(left[i][1], right[i][1])]
        identical = same_label == len(shared) == len(left) == len(right)
        print(f"eval predictions, {stage}: {'identical' if identical else 'DIFFERENT'} "
              f"({same_label}/{len(shared)} same prediction, {len(left)} vs {len(right)} rows; "
              f"largest score difference {max(gaps, default=0.0):.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sides", nargs=2, type=Side.parse, metavar="RESULTS:PROCESSES:NAME")
    a, b = parser.parse_args().sides
    speeds = print_costs([a, b], [stage_info(a), stage_info(b)])
    if a.processes != b.processes and speeds[0] > 0:
        speedup = speeds[1] / speeds[0]
        print(f"speedup {b.name} over {a.name}: {speedup:.2f}x on {b.processes} vs {a.processes} processes; "
              f"scaling efficiency {speedup / (b.processes / a.processes):.0%}")
    elif speeds[0] > 0:
        print(f"{b.name} / {a.name} tokens/s: {speeds[1] / speeds[0]:.2f}x")
    print_agreement(a, b)


if __name__ == "__main__":
    main()
