"""`bench eval TASK --model PATH`: metrics of one model or bench checkpoint, stored as a run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.errors import BenchError


def evaluate_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    import json

    from harness.cli import task_options
    from harness.config import resolve
    from harness.data import data_dir_from
    from harness.models import resolve_model
    from harness.pipeline import Runner, quiet_transformers
    from harness.registry import get_task
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

        def work() -> Any:
            if meta is not None:
                model, tokenizer, _ = load_checkpoint(path)
                return evaluate_model(spec, ref, config, model, tokenizer, splits)
            default = "prompt" if ref.can_prompt and not isinstance(spec.kind, ExtractiveQA) else "head"
            baseline = config.baselines[0] if config.baselines and config.baselines[0] != "auto" else default
            return evaluate_baseline(spec, ref, config, baseline, splits)

        run_id = f"eval__{spec.key}__{config.digest()}"
        with store.run_lock(run_id, runner.log):
            record = runner.stage(run_id, "eval", config, splits, work,
                                  stored_config={**config.to_dict(), "method": "eval"})
    finally:
        store.close()
    metrics, headline = record.metrics, record.metrics["headline"]
    value = metrics[headline]
    extra = f" | macro-F1 {metrics['f1_macro']['value']:.4f}" if "f1_macro" in metrics else ""
    print(f"{spec.key} | {args.model} | {record.info['mode']} | n {record.info.get('examples', '?')} | failures "
          f"{metrics.get('failures', 0)} | {headline} {value['value']:.4f} [{value['ci'][0]:.4f}, {value['ci'][1]:.4f}]"
          f"{extra} | {record.seconds:.1f} s")
    return 0
