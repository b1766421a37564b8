"""Where a fine-tuning step's memory goes: resident memory after each phase (model loaded, forward,
backward, optimizer step) and each phase's sampled peak, LoRA on samsum's longest training rows as
`bench run samsum` builds them, with or without activation checkpointing, then one validation-loss
batch without gradients.

Run it under `MALLOC_MMAP_THRESHOLD_=65536` to make glibc return freed blocks, so the figures follow
the live tensors rather than the heap's high-water mark:

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/train_step_memory.py --gradient-checkpointing on
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, positive_int, run_main  # noqa: E402


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from harness.backends.batching import collate
    from harness.backends.models import load_lm, load_tokenizer, resolve_model
    from harness.backends.target_logits import lm_loss
    from harness.options import RunConfig
    from harness.run.memory import PeakMemory, _rss_mb
    from harness.task.data import build_splits
    from harness.task.registry import get_task
    from harness.train.methods import apply_method

    figures: dict[str, Any] = {"start": _rss_mb()}
    spec = get_task("samsum")
    splits = build_splits(spec, args.data_dir, train_samples=200, eval_samples=10, validation_samples=5, seed=0)
    ref = resolve_model(args.model)
    tokenizer, model = load_tokenizer(ref), load_lm(ref)
    config = RunConfig(task="samsum", model=args.model, max_length=args.max_length,
                       gradient_checkpointing=args.gradient_checkpointing)
    figures["model loaded"] = _rss_mb()
    model = apply_method(model, config, "CAUSAL_LM", args.gradient_checkpointing == "on")
    items = sorted(spec.kind.train_items(spec, tokenizer, False, config, splits.train), key=lambda i: -len(i.input_ids))
    inputs = collate(items[: args.batch_size], tokenizer.pad_token_id, torch.device("cpu"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for step in range(2):  # the first step also allocates gradients and the optimizer state
        with PeakMemory(0.01) as forward:
            loss = lm_loss(model, inputs)
        figures[f"step {step}: after forward"], figures[f"step {step}: forward peak"] = _rss_mb(), forward.mb
        with PeakMemory(0.01) as backward:
            loss.backward()
        figures[f"step {step}: backward peak"], figures[f"step {step}: after backward"] = backward.mb, _rss_mb()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
        gc.collect()
        figures[f"step {step}: after optimizer"] = _rss_mb()
    model.eval()
    with PeakMemory(0.01) as validation, torch.no_grad():
        lm_loss(model, collate(items[: args.eval_batch_size], tokenizer.pad_token_id, torch.device("cpu")))
    figures["validation loss peak"] = validation.mb
    figures["batch"] = list(inputs["input_ids"].shape)
    return {name: round(value) if isinstance(value, float) else value for name, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--eval-batch-size", type=positive_int, default=16)
    parser.add_argument("--max-length", type=positive_int, default=384)
    parser.add_argument("--gradient-checkpointing", choices=("on", "off"), default="on")
    print(json.dumps(measure(parser.parse_args()), indent=1))


if __name__ == "__main__":
    run_main(main)
