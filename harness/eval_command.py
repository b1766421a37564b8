"""`bench eval TASK --model PATH`: metrics of one model or bench checkpoint, stored as a run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.errors import BenchError


def evaluate_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import json

    from harness.config import resolve
    from harness.data import data_dir_from
    from harness.models import resolve_model
    from harness.pipeline import Runner, quiet_transformers
    from harness.registry import get_task
    from harness.stages import (
        CHECKPOINT_FILE,
        evaluate_baseline,
        evaluate_model,
        load_checkpoint,
    )
    from harness.store import Store, results_dir

    spec = get_task(args.task, labels=args.labels)
    data_dir = data_dir_from(args.data_dir)
    path = Path(args.model)
    meta_file = path / CHECKPOINT_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if meta is not None and meta["task"] != spec.key:
        raise BenchError(f"checkpoint {path} was trained on task {meta['task']}, not {spec.key}; "
                         f"evaluate it with `bench eval {meta['task']} --model {path}`")
    ref = resolve_model(meta["base_source"] if meta else args.model)
    config = resolve(spec, args.model, {**overrides, **({"objective": meta["objective"]} if meta else {})},
                     args.preset)
    quiet_transformers()
    store = Store(results_dir(args.results))
    try:
        runner = Runner(spec, store, data_dir, lambda message: print(message, file=sys.stderr))
        splits = runner.splits(config)
        if meta is not None:
            model, tokenizer, _ = load_checkpoint(path)
            predictions, _, info, _ = evaluate_model(spec, ref, config, model, tokenizer, splits)
        else:
            baseline = (config.baselines[0] if config.baselines and config.baselines[0] != "auto"
                        else "prompt" if ref.can_prompt else "head")
            predictions, _, info, _ = evaluate_baseline(spec, ref, config, baseline, splits)
        from harness.metrics.classification import classification_report

        metrics = classification_report([p.gold for p in predictions], [p.label for p in predictions],
                                        spec.kind.labels, seed=config.seed)
        run_id = f"eval__{spec.key}__{config.digest()}"
        store.complete_stage(run_id, "eval", config={**config.to_dict(), "method": "eval"}, seconds=0.0,
                             metrics=metrics, info=info, predictions=predictions)
    finally:
        store.close()
    acc, f1 = metrics["accuracy"], metrics["f1_macro"]
    print(f"{spec.key} | {args.model} | {info['mode']} | n {metrics['n']} | failures {metrics['failures']} | "
          f"accuracy {acc['value']:.4f} [{acc['ci'][0]:.4f}, {acc['ci'][1]:.4f}] | macro-F1 {f1['value']:.4f}")
    return 0
