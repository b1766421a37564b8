"""`bench rescore RUN`: recompute every stage's metrics from the outputs stored with it.

No model is loaded: the eval examples (references) are rebuilt from the data with the run's own
sampling settings and seed, and checked against the stored example ids, so a metric fix or a new
metric applies to old runs in seconds.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from harness.errors import BenchError
from harness.kinds.scoring_helpers import score_stage
from harness.records import parse_stage
from harness.task.registry import spec_for


def rescore_command(args: argparse.Namespace) -> int:
    # lazy: keeps numpy, pandas, sqlite3 out of `bench --help`
    from harness.report.terminal import print_and_save
    from harness.compare.paired import compare
    from harness.task.data import data_dir_from, run_splits
    from harness.store import Store

    started = time.perf_counter()
    store = Store.existing(args.results)
    root = store.root
    try:
        config = store.run_config(args.run)
        if config is None:
            raise BenchError(f"no run {args.run!r} in {root}/bench.sqlite; `bench report --format csv` lists the "
                             f"run ids (the folders under {root}/runs)")
        spec = spec_for(config)
        splits = run_splits(spec, config, data_dir_from(args.data_dir))
        # lm-eval stages hold lm-eval's own per-document scores of its documents: kept as stored
        stored = {stage: (store.stage(args.run, stage), [] if parse_stage(stage) else store.predictions(args.run, stage))
                  for stage in store.stages_of(args.run)}
        for stage, (record, predictions) in stored.items():  # every check before the first rewrite
            if predictions:
                check_same_data(args.run, stage, record.info.get("data_hashes") or {}, splits.source_hashes,
                                {p.example_id for p in predictions} - {e.id for e in splits.eval})
        records: dict[str, Any] = {}
        for stage, (record, predictions) in stored.items():
            if predictions:
                metrics, predictions = score_stage(spec, splits.eval, predictions, config["seed"])
                kept = {k: v for k, v in record.metrics.items() if k in ("best_validation", "best_step")}
                record = store.complete_stage(args.run, stage, config=config, seconds=record.seconds,
                                              metrics={**metrics, **kept, "headline": spec.kind.headline},
                                              info=record.info, predictions=predictions)
                print(f"  {stage}: rescored {len(predictions)} outputs", file=sys.stderr)
            records[stage] = record
        if "finetuned" in records and "finetune" in records:
            print_and_save(store, spec, compare(store, args.run, config, records), splits, time.perf_counter() - started)
    finally:
        store.close()
    return 0


def check_same_data(run_id: str, stage: str, stored_hashes: dict[str, str], current_hashes: dict[str, str],
                    unknown_ids: set[str]) -> None:
    """The references must be the ones the outputs were made for: same example ids, same file
    contents (compared by hash, so a moved but identical data folder still matches)."""
    if unknown_ids:
        raise BenchError(f"stored predictions of {run_id} {stage} do not match the data's eval examples: pass the "
                         "--data-dir the run used")
    before, now = set(stored_hashes.values()) - {""}, set(current_hashes.values()) - {""}
    if before and now and before != now:
        raise BenchError(f"the data files differ from the ones {run_id} {stage} was scored on (their sha256 changed): "
                         "pass the --data-dir the run used, or re-run the task on the new data")
