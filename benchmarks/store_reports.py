"""Reports of a large results store: `bench report` (md, csv, html) and `bench export` on a store of
`--runs` finished sst2 runs, written straight through the store's API (no model), `--examples`
predictions per evaluated stage and `--steps` training-curve points per run. Runs come in groups of
`--group` that share task x model x method (a sweep's cells: their settings label them apart).

    python benchmarks/store_reports.py --runs 200 --examples 500 --group 48
    python benchmarks/store_reports.py --runs 20 --examples 25000 --formats md,csv   # full IMDB-size evals

Prints the wall time of each command (in-process, imports already paid) and the size of what it wrote.
Figures on a 2-core CPU (scale-audit): 1,000 runs x 500 examples in groups of 240, md report 170 s
before settings labels were found once per group, 14 s after; 200 runs, html 51 s and 32 MB
(matplotlib's training curves: ~0.2 s and 40-160 KB a run).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import choice_list, positive_int, run_main  # noqa: E402

FORMATS = ("md", "csv", "latex", "html", "export")


def build_store(root: Path, runs: int, examples: int, steps: int, group: int) -> None:
    """`runs` finished classification runs with realistic records (metrics with CIs, per-class
    scores, cost info) and seeded predictions: the baseline right on 60% of the examples, the
    fine-tuned model on 80%."""
    import numpy as np

    from harness.metrics.classification import classification_report
    from harness.store import Store
    from harness.types import Prediction

    rng = np.random.default_rng(0)
    store = Store(root)
    golds = [int(g) for g in rng.integers(0, 2, examples)]
    for number in range(runs):
        config = {"task": "sst2", "model": f"model{number // group}", "method": "lora", "preset": "quick", "seed": 0,
                  "lr": [1e-5, 5e-5, 1e-4, 5e-4][number % 4], "lora_rank": 2 ** (1 + number // 4 % 6),
                  "epochs": 1 + number // 24, "early_stop_metric": "auto", "validation_samples": 200}
        run_id = f"sst2__model{number // group}__lora__{number:010d}"
        for stage, right in (("baseline:prompt", 0.6), ("finetune", 0.0), ("finetuned", 0.8)):
            if stage == "finetune":
                curves = [{"step": s, "loss": float(0.3 + 0.7 * np.exp(-4 * s / steps) + 0.05 * rng.standard_normal()),
                           "lr": 1e-4} for s in range(1, steps + 1)]
                curves += [{"step": s, "val_f1_macro": float(rng.random())} for s in range(steps // 8, steps + 1,
                                                                                          max(1, steps // 8))]
                store.complete_stage(run_id, stage, config=config, seconds=60.0,
                                     metrics={"best_validation": float(rng.random())},
                                     info={"params": {"base": 135_000_000, "added": 460_800, "trainable": 460_800,
                                                      "trainable_pct": 0.34},
                                           "train_seconds": 60.0, "tokens_per_second": 900.0}, curves=curves)
                continue
            labels = [g if rng.random() < right else 1 - g for g in golds]
            scores = np.round(np.log(rng.random((examples, 2))), 6).tolist()
            predictions = [Prediction(f"e{i}", g, p, tuple(s)) for i, (g, p, s) in enumerate(zip(golds, labels, scores))]
            store.complete_stage(run_id, stage, config=config, seconds=30.0,
                                 metrics=classification_report(golds, labels, ("negative", "positive")),
                                 info={"mode": "prompt", "shots": 0, "peak_memory_mb": 900.0,
                                       "data_notes": [f"eval {examples} of {examples} in validation"]},
                                 predictions=predictions)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=positive_int, default=200)
    parser.add_argument("--examples", type=positive_int, default=500, help="predictions per evaluated stage")
    parser.add_argument("--steps", type=positive_int, default=300, help="training-curve points per run")
    parser.add_argument("--group", type=positive_int, default=48, help="runs per task x model x method")
    parser.add_argument("--formats", type=choice_list(FORMATS), default=list(FORMATS))
    args = parser.parse_args()

    from harness.cli import main as bench

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "results"
        started = time.perf_counter()
        build_store(root, args.runs, args.examples, args.steps, args.group)
        print(f"store: {args.runs} runs x {args.examples} examples, groups of {args.group}, {args.steps} curve "
              f"points; built in {time.perf_counter() - started:.1f} s, "
              f"{(root / 'bench.sqlite').stat().st_size / 1e6:.1f} MB of SQLite")
        print("| command | wall s | output MB |\n|---|---|---|")
        for fmt in args.formats:
            out = Path(folder) / f"out.{fmt}"
            command = (["export", "--to", str(out)] if fmt == "export"
                       else ["report", "--format", fmt, "--out", str(out)])
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the paths bench prints
                code = bench([*command, "--results", str(root)])
            if code != 0:
                sys.exit(f"error: bench {' '.join(command)} failed")
            seconds = time.perf_counter() - started
            size = sum(p.stat().st_size for p in out.iterdir()) if out.is_dir() else out.stat().st_size
            print(f"| bench {' '.join(command[:3 if fmt != 'export' else 1])} | {seconds:.1f} | {size / 1e6:.2f} |")


if __name__ == "__main__":
    run_main(main)
