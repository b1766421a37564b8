"""`bench rescore RUN`: recompute every stage's metrics from the outputs stored with it.

No model is loaded: the eval examples (references) are rebuilt from the data with the run's own
sampling settings and seed, and checked against the stored example ids, so a metric fix or a new
metric applies to old runs in seconds.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.errors import BenchError


def rescore_command(args: argparse.Namespace) -> int:
    from harness.cli import print_and_save
    from harness.compare import compare
    from harness.data import data_dir_from, run_splits
    from harness.registry import spec_for
    from harness.scoring import headline_metric, score_stage
    from harness.store import Store, results_dir

    root = results_dir(args.results)
    if not (root / "bench.sqlite").is_file():
        raise BenchError(f"no results store at {root}/bench.sqlite; pass --results or run `bench run` first")
    store = Store(root)
    try:
        config = store.run_config(args.run)
        if config is None:
            raise BenchError(f"no run {args.run!r} in {root}/bench.sqlite; `bench report` lists the runs")
        spec = spec_for(config)
        splits = run_splits(spec, config, data_dir_from(args.data_dir))
        records: dict[str, Any] = {}
        for stage in store.stages_of(args.run):
            record = store.stage(args.run, stage)
            predictions = store.predictions(args.run, stage)
            if predictions:
                if {p.example_id for p in predictions} - {e.id for e in splits.eval}:
                    raise BenchError(f"stored predictions of {args.run} {stage} do not match the data's eval "
                                     "examples: pass the --data-dir the run used")
                metrics, predictions = score_stage(spec, splits.eval, predictions, config["seed"])
                kept = {k: v for k, v in record.metrics.items() if k in ("best_validation", "best_step")}
                record = store.complete_stage(args.run, stage, config=config, seconds=record.seconds,
                                              metrics={**metrics, **kept, "headline": headline_metric(spec)},
                                              info=record.info, predictions=predictions)
                print(f"  {stage}: rescored {len(predictions)} outputs", file=sys.stderr)
            records[stage] = record
        if "finetuned" in records and "finetune" in records:
            print_and_save(store, spec, compare(store, args.run, config, records), splits, 0.0)
    finally:
        store.close()
    return 0

