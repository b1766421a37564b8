"""`bench eval TASK --model PATH`: metrics of one model or bench checkpoint, stored as a run."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import BenchError


def evaluate_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import json

    from harness.cli import task_options
    from harness.config import resolve
    from harness.data import data_dir_from
    from harness.models import resolve_model
    from harness.memory import PeakMemory
    from harness.pipeline import Runner, quiet_transformers
    from harness.registry import get_task
    from harness.scoring import headline_metric, score_stage
    from harness.spec import ExtractiveQA
    from harness.stages import (
        CHECKPOINT_FILE,
        evaluate_baseline,
        evaluate_model,
        load_checkpoint,
    )
    from harness.store import Store, results_dir

    spec = get_task(args.task, **task_options(args))
    data_dir = data_dir_from(args.data_dir)
    path = Path(args.model)
    meta_file = path / CHECKPOINT_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    if meta is not None and meta["task"] != spec.key:
        raise BenchError(f"checkpoint {path} was trained on task {meta['task']}, not {spec.key}; "
                         f"evaluate it with `bench eval {meta['task']} --model {path}`")
    ref = resolve_model(meta["base_source"] if meta else args.model, trust_remote_code=args.trust_remote_code)
    config = resolve(spec, args.model, {**overrides, **({"objective": meta["objective"]} if meta else {})},
                     args.preset, can_prompt=ref.can_prompt)
    quiet_transformers()
    store = Store(results_dir(args.results))
    try:
        runner = Runner(spec, store, data_dir, lambda message: print(message, file=sys.stderr))
        splits = runner.splits(config)
        started = time.perf_counter()
        with PeakMemory() as peak:
            if meta is not None:
                model, tokenizer, _ = load_checkpoint(path)
                predictions, _, info, _ = evaluate_model(spec, ref, config, model, tokenizer, splits)
            else:
                default = "prompt" if ref.can_prompt and not isinstance(spec.kind, ExtractiveQA) else "head"
                baseline = config.baselines[0] if config.baselines and config.baselines[0] != "auto" else default
                predictions, _, info, _ = evaluate_baseline(spec, ref, config, baseline, splits)
        seconds = time.perf_counter() - started
        metrics, predictions = score_stage(spec, splits.eval, predictions, config.seed)
        headline = headline_metric(spec)
        metrics["headline"] = headline
        run_id = f"eval__{spec.key}__{config.digest()}"
        store.complete_stage(run_id, "eval", config={**config.to_dict(), "method": "eval"}, seconds=seconds,
                             metrics=metrics, info={**info, "peak_memory_mb": peak.mb},
                             predictions=predictions)
    finally:
        store.close()
    value = metrics[headline]
    extra = f" | macro-F1 {metrics['f1_macro']['value']:.4f}" if "f1_macro" in metrics else ""
    print(f"{spec.key} | {args.model} | {info['mode']} | n {len(predictions)} | failures {metrics.get('failures', 0)} | "
          f"{headline} {value['value']:.4f} [{value['ci'][0]:.4f}, {value['ci'][1]:.4f}]{extra} | {seconds:.1f} s")
    return 0
