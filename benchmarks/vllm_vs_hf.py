"""Generation: bench's vLLM backend vs its Hugging Face path (generate_batched), side by side.

Same model, prompts (samsum test dialogues with the task's prompt and chat template), greedy,
max_new_tokens and stop strings, in one process; the figures are the count of identical outputs
and each side's new tokens per second (output tokens, re-encoded the same way for both sides),
medians of --repeats runs after an untimed warm-up. Runs in vLLM's environment:

    VLLM_VENV=/work/vllm-venv bash scripts/vllm_env.sh   # once
    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=2 /work/vllm-venv/bin/python benchmarks/vllm_vs_hf.py
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, positive_int, run_main, samsum_prompts  # noqa: E402


def timed(generate: Callable[[], list[str]], repeats: int) -> tuple[list[str], float]:
    """The outputs of the last run and the median wall time of `repeats` runs."""
    times, outputs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = generate()
        times.append(time.perf_counter() - started)
    return outputs, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=positive_int, default=32, help="samsum test dialogues")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="the HF path's batch")
    parser.add_argument("--max-new-tokens", type=positive_int, default=60)
    parser.add_argument("--max-length", type=positive_int, default=384, help="prompt + generated tokens")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (starts minutes sooner)")
    args = parser.parse_args()

    import torch

    from harness.backends.base import Generation
    from harness.backends.generate import generate_batched
    from harness.backends.models import load_lm
    from harness.backends.vllm import VLLMBackend

    torch.set_grad_enabled(False)
    spec, ref, tokenizer, prompts = samsum_prompts(args.data_dir, args.model, args.limit,
                                                   args.max_length - args.max_new_tokens)
    model = load_lm(ref).eval()
    stop = tuple(spec.kind.stop)

    def hf(batch: list[list[int]]) -> list[str]:
        return generate_batched(model, tokenizer, batch, batch_size=args.batch_size,
                                max_new_tokens=args.max_new_tokens, stop=stop)

    started = time.perf_counter()
    backend = VLLMBackend(ref, dtype="float32", max_model_len=args.max_length, enforce_eager=args.eager)
    startup = time.perf_counter() - started

    def served(batch: list[list[int]]) -> list[str]:
        return backend.generate([Generation(tuple(p), args.max_new_tokens, stop=stop) for p in batch])

    hf(prompts[:2]), served(prompts[:2])  # untimed: one-time set-up costs
    hf_outputs, hf_time = timed(lambda: hf(prompts), args.repeats)
    vllm_outputs, vllm_time = timed(lambda: served(prompts), args.repeats)
    backend.close()
    print_table(args, tokenizer, prompts, {"HF generate_batched": (hf_outputs, hf_time),
                                           f"vLLM {'eager' if args.eager else 'compiled'}": (vllm_outputs, vllm_time)},
                startup)


def print_table(args: Any, tokenizer: Any, prompts: list[list[int]], sides: dict[str, tuple[list[str], float]],
                startup: float) -> None:
    import torch
    import transformers
    import vllm

    (hf_outputs, _), (vllm_outputs, _) = sides.values()
    same = sum(a == b for a, b in zip(hf_outputs, vllm_outputs))
    print(f"samsum, {len(prompts)} dialogues, {args.model}, greedy, max_new_tokens {args.max_new_tokens}, fp32, "
          f"CPU threads {torch.get_num_threads()}, median of {args.repeats}; vllm {vllm.__version__}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print("| backend | wall s | new tokens | new tokens/s |\n|---|---|---|---|")
    for name, (outputs, seconds) in sides.items():
        tokens = sum(len(tokenizer(text, add_special_tokens=False).input_ids) for text in outputs)
        print(f"| {name} | {seconds:.1f} | {tokens} | {tokens / seconds:.1f} |")
    print(f"identical outputs {same}/{len(prompts)}; vLLM engine start {startup:.0f} s (not in the timings)")


if __name__ == "__main__":  # vLLM spawns its engine process: this guard keeps the child from re-running main
    run_main(main)
