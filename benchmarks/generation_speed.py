"""Generation: bench's batched, length-sorted greedy decoding vs a one-example-at-a-time loop.

Same model, prompts (samsum test dialogues with the task's prompt and chat template), greedy,
max_new_tokens and stop strings; outputs must be identical, and the figure is the wall-time ratio.

    HF_HUB_OFFLINE=1 python benchmarks/generation_speed.py --limit 200
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, positive_int, run_main, samsum_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=positive_int, default=200, help="samsum test dialogues")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-new-tokens", type=positive_int, default=60)
    parser.add_argument("--max-length", type=positive_int, default=384, help="prompt + generated tokens")
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()

    import torch

    from harness.backends.generate import generate_batched
    from harness.backends.models import load_lm
    from harness.backends.precision import device as bench_device

    torch.set_grad_enabled(False)
    spec, ref, tokenizer, prompts = samsum_prompts(args.data_dir, args.model, args.limit,
                                                   args.max_length - args.max_new_tokens)
    device = bench_device()  # the device `bench run` uses
    model = load_lm(ref).to(device).eval()
    options = dict(max_new_tokens=args.max_new_tokens, stop=spec.kind.stop)
    generate_batched(model, tokenizer, prompts[:2], batch_size=2, **options)  # untimed: one-time set-up costs
    batched_times, single_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        batched = generate_batched(model, tokenizer, prompts, batch_size=args.batch_size, **options)
        batched_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        single = [generate_batched(model, tokenizer, [p], batch_size=1, **options)[0] for p in prompts]
        single_times.append(time.perf_counter() - started)
    same = sum(a == b for a, b in zip(batched, single))
    b, s = statistics.median(batched_times), statistics.median(single_times)
    print(f"samsum, {len(prompts)} dialogues, {args.model}, greedy, max_new_tokens {args.max_new_tokens}, "
          f"batch {args.batch_size}, "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU threads {torch.get_num_threads()}'}, "
          f"fp32, median of {args.repeats}")
    print("| loop | wall s | dialogues/s |\n|---|---|---|")
    print(f"| bench batched | {b:.1f} | {len(prompts) / b:.2f} |\n| one at a time | {s:.1f} | {len(prompts) / s:.2f} |")
    print(f"speed-up {s / b:.2f}x; identical outputs {same}/{len(prompts)}")


if __name__ == "__main__":
    run_main(main)
