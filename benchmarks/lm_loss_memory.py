"""LM-objective training step: the model's own loss (LM head + log-softmax at every position) vs
bench's target-only loss (the head at the target positions alone), same batch, same gradients.

Each side runs in its own process (peak RSS is per process): samsum training items built as
`bench run samsum` builds them (prompt masked, the summary as target), one batch of the longest
ones, forward + backward + AdamW step, timed over a few steps after one untimed step.

    HF_HUB_OFFLINE=1 python benchmarks/lm_loss_memory.py --model smollm2
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, positive_int, run_main  # noqa: E402

SIDES = ("model-loss", "target-only")


def one_side(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from harness.options import RunConfig
    from harness.task.data import build_splits
    from harness.backends.batching import batch_loss, collate
    from harness.backends.models import load_lm, load_tokenizer, resolve_model
    from harness.task.registry import get_task

    spec = get_task("samsum")
    splits = build_splits(spec, args.data_dir, train_samples=200, eval_samples=10, validation_samples=5, seed=0)
    ref = resolve_model(args.model)
    tokenizer, model = load_tokenizer(ref), load_lm(ref)
    items = spec.kind.train_items(spec, tokenizer, ref.family == "seq2seq",
                                  RunConfig(task="samsum", model=args.model, max_length=args.max_length), splits.train)
    batch = sorted(items, key=lambda item: -len(item.input_ids))[: args.batch_size]
    inputs = collate(batch, tokenizer.pad_token_id, torch.device("cpu"))
    targets = sum(sum(label != -100 for label in item.lm_labels or ()) for item in batch)
    positions = int(inputs["attention_mask"].sum())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        if args.side == "target-only":
            loss = batch_loss(model, inputs, lm_targets=True)
        else:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step allocates the optimizer state: untimed
            times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"loss": float(loss), "seconds": statistics.median(times), "peak_gb": peak / 2**20,
            "step_gb": (peak - before) / 2**20, "targets": targets, "positions": positions,
            "width": inputs["input_ids"].shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--max-length", type=positive_int, default=384)
    parser.add_argument("--steps", type=positive_int, default=3)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # the child process's side
    args = parser.parse_args()
    if args.side:
        print(json.dumps(one_side(args)))
        return
    results = {}
    for side in SIDES:
        command = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"error: the {side} side failed:\n{done.stderr[-2000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    full, ours = results["model-loss"], results["target-only"]
    print(f"samsum, {args.model}, batch {args.batch_size} x {full['width']} tokens ({full['positions']} real, "
          f"{full['targets']} targets), fp32, CPU, median of {args.steps} steps")
    print("| loss | value | s/step | process peak RSS GB | peak added by training GB |\n|---|---|---|---|---|")
    for side in SIDES:
        r = results[side]
        print(f"| {side} | {r['loss']:.6f} | {r['seconds']:.2f} | {r['peak_gb']:.2f} | {r['step_gb']:.2f} |")
    print(f"training peak {full['step_gb'] / max(ours['step_gb'], 1e-9):.2f}x lower, step "
          f"{full['seconds'] / ours['seconds']:.2f}x faster; loss difference {abs(full['loss'] - ours['loss']):.2e}")


if __name__ == "__main__":
    run_main(main)
