"""bench's prompt-baseline stage on `--backend hf` and `--backend vllm`, side by side, per task.

The real stage code (harness/run/stages.py -> vllm_stages.py), the same resolved run config but for
the backend, the same seeded eval sample: samsum and squad_v2 (--mode generate) generations, sst2
prompt-scored labels. Per task: outputs (or labels) identical, the headline metric on each side
and its delta, and speed (examples/s and new tokens/s, model load and engine start excluded, shown
apart). Runs in vLLM's environment (one engine per task, started eager with --eager):

    VLLM_VENV=/work/vllm-venv bash scripts/vllm_env.sh   # once
    OMP_NUM_THREADS=1 VLLM_CPU_KVCACHE_SPACE=2 /work/vllm-venv/bin/python benchmarks/vllm_vs_hf_stages.py --eager

Measured (2-core shared CPU, load average 1.3 at the start, 4 min 22 s in all; smollm2, 32 examples
per task, fp32, one thread each side, vLLM 0.32.0 eager):

| task / backend | agreement / speed | headline hf / vllm |
|---|---|---|
| samsum | 32/32 outputs identical | rougeL 0.1738 / 0.1738 (delta +0.0000) |
|   hf | 0.46 ex/s, 19.0 new tok/s | stage 70 s |
|   vllm | 0.66 ex/s, 27.3 new tok/s | stage 70 s (engine start 21 s) |
| squad_v2 --mode generate | 32/32 outputs identical | f1 9.6276 / 9.6276 (delta +0.0000) |
|   hf | 1.12 ex/s, 15.8 new tok/s | stage 29 s |
|   vllm | 1.37 ex/s, 19.3 new tok/s | stage 42 s (engine start 19 s) |
| sst2 | 32/32 labels identical, max score gap 3.8e-05 | accuracy 0.8438 / 0.8438 (delta +0.0000) |
|   hf | 9.38 ex/s | stage 4 s |
|   vllm | 2.36 ex/s | stage 32 s (engine start 18 s) |

Speeds exclude model load / engine start (shown apart); samsum's include scoring the reference
(perplexity) on both sides. vLLM generates 1.2-1.4x faster here; for two-word verbalizer scoring
the HF path (one shared-prefix forward per example) is 4x faster than vLLM's prompt log-probs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, positive_int, run_main  # noqa: E402

TASKS = (("samsum", {}), ("squad_v2", {"mode": "generate"}), ("sst2", {}))


def stage(task: str, options: dict[str, Any], backend: str, args: Any) -> dict[str, Any]:
    """One prompt-baseline stage: its scored predictions, metrics and timings."""
    from harness.backends.models import resolve_model
    from harness.kinds.scoring_helpers import score_stage
    from harness.resolve import resolve
    from harness.run.stages import evaluate_baseline
    from harness.task.data import run_splits
    from harness.task.registry import get_task

    spec = get_task(task, **options)
    ref = resolve_model(args.model)
    config = resolve(spec, args.model, {"eval_samples": args.limit, "backend": backend}, "quick", can_prompt=True)
    splits = run_splits(spec, config.to_dict(), args.data_dir)
    started = time.perf_counter()
    predictions, _, info, _ = evaluate_baseline(spec, ref, config, "prompt", splits)
    seconds = time.perf_counter() - started
    metrics, predictions = score_stage(spec, splits.eval, predictions, config.seed)
    return {"predictions": predictions, "metric": spec.kind.headline, "value": metrics[spec.kind.headline]["value"],
            "stage_seconds": seconds, "examples_per_second": info["examples_per_second"],
            "engine_start": info.get("engine_start_seconds")}


def new_tokens(result: dict[str, Any], tokenizer: Any) -> int | None:
    outputs = [p.output for p in result["predictions"]]
    if any(output is None for output in outputs):
        return None
    return sum(len(tokenizer(text, add_special_tokens=False).input_ids) for text in outputs)


def compare(task: str, options: dict[str, Any], args: Any, tokenizer: Any) -> list[str]:
    sides = {backend: stage(task, options, backend, args) for backend in ("hf", "vllm")}
    hf, served = sides["hf"]["predictions"], sides["vllm"]["predictions"]
    generated = hf[0].output is not None
    if generated:
        same = sum(a.output == b.output for a, b in zip(hf, served))
        agreement = f"{same}/{len(hf)} outputs identical"
    else:
        same = sum(a.label == b.label for a, b in zip(hf, served))
        gap = max(abs(x - y) for a, b in zip(hf, served) for x, y in zip(a.scores, b.scores))
        agreement = f"{same}/{len(hf)} labels identical, max score gap {gap:.1e}"
    name = task + "".join(f" --{k} {v}" for k, v in options.items())
    delta = sides["vllm"]["value"] - sides["hf"]["value"]
    rows = [f"| {name} | {agreement} | {sides['hf']['metric']} {sides['hf']['value']:.4f} / "
            f"{sides['vllm']['value']:.4f} (delta {delta:+.4f}) |"]
    for backend, result in sides.items():
        examples = len(result["predictions"])
        eval_seconds = examples / result["examples_per_second"]
        tokens = new_tokens(result, tokenizer) if generated else None
        rate = f"{tokens / eval_seconds:.1f}" if tokens else "-"
        start = f"{result['engine_start']:.0f}" if result["engine_start"] is not None else "-"
        rows.append(f"|   {backend} | {result['examples_per_second']:.2f} ex/s, {rate} new tok/s | "
                    f"stage {result['stage_seconds']:.0f} s (engine start {start} s) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=positive_int, default=32, help="eval examples per task")
    parser.add_argument("--tasks", default=",".join(t for t, _ in TASKS), help="a subset of samsum,squad_v2,sst2")
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (starts minutes sooner)")
    args = parser.parse_args()
    if args.eager:
        os.environ["BENCH_VLLM_ENGINE"] = json.dumps({"enforce_eager": True})

    import torch
    import vllm

    from harness.backends.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(args.model))
    chosen = set(args.tasks.split(","))
    print(f"{args.model}, prompt baseline, {args.limit} eval examples per task, greedy, fp32, CPU threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}; vllm {vllm.__version__} "
          f"({'eager' if args.eager else 'compiled'}), torch {torch.__version__}")
    print("| task / backend | agreement / speed | headline hf / vllm |\n|---|---|---|")
    for task, options in TASKS:
        if task in chosen:
            print("\n".join(compare(task, options, args, tokenizer)), flush=True)


if __name__ == "__main__":  # vLLM spawns its engine process: this guard keeps the child from re-running main
    run_main(main)
