"""vLLM data-parallel replicas under torchrun against one engine on the same cores: bench's real
prompt-baseline stage (samsum generation) served by one vLLM engine with 1 thread, one engine
with all N threads, and N replicas with 1 thread each (`torchrun --nproc-per-node N`, vLLM's
external launcher). Prints each setting's examples/s and new tokens/s (engine start excluded,
shown apart) and how many outputs equal the one-engine outputs. Runs in vLLM's environment:

    VLLM_VENV=/work/vllm-venv bash scripts/vllm_env.sh   # once
    VLLM_CPU_KVCACHE_SPACE=1 /work/vllm-venv/bin/python benchmarks/vllm_replicas.py

Measured (2-core CPU, idle, load 0.4; smollm2, 32 samsum examples, vLLM 0.32.0 eager, 2 min 48 s):

| setting | outputs = 1-engine | ex/s | new tok/s | stage s | engine start s |
|---|---|---|---|---|---|
| 1 engine, 1 thread | 32/32 | 0.73 | 30.2 | 62 | 19 |
| 1 engine, 2 threads | 32/32 | 1.23 | 50.9 | 45 | 19 |
| 2 replicas x 1 thread | 32/32 | 1.17 | 48.4 | 35 | 7 |

Two replicas are 1.6x one engine on one core, and on the same two cores about what one engine
does with both threads (0.95x): a CPU engine already spreads over its cores, so replicas pay off
where each has a device of its own (GPUs), which this machine cannot show.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, add_data_dir, positive_int, run_main  # noqa: E402


def pin(cores: list[int]) -> None:
    """Run this process, its OpenMP threads and vLLM's on exactly `cores` (before torch or vLLM
    start any thread): each setting then uses the cores its name says."""
    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))


def serve(model: str, limit: int, data_dir: str, out: str, threads: int) -> None:
    """One setting's stage, on every rank of however many the launcher started, each on `threads`
    cores of its own; rank 0 writes the outputs and timings to `out`."""
    cores = sorted(os.sched_getaffinity(0))
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    pin(cores[rank * threads:(rank + 1) * threads])
    from harness.backends.models import resolve_model
    from harness.distributed import join, leave
    from harness.resolve import resolve
    from harness.run.stages import evaluate_baseline
    from harness.task.data import run_splits
    from harness.task.registry import get_task

    launcher = join()
    spec, ref = get_task("samsum"), resolve_model(model)
    config = resolve(spec, model, {"eval_samples": limit, "backend": "vllm"}, "quick", can_prompt=True)
    splits = run_splits(spec, config.to_dict(), Path(data_dir))
    started = time.perf_counter()
    predictions, _, info, _ = evaluate_baseline(spec, ref, config, "prompt", splits, launcher)
    if launcher.is_main:
        Path(out).write_text(json.dumps({"outputs": [p.output for p in predictions], "info": info,
                                         "stage_seconds": time.perf_counter() - started}))
    leave()


def setting(name: str, processes: int, threads: int, args: Any, folder: Path) -> dict[str, Any]:
    out = folder / f"{name}.json"
    launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                         "--nproc-per-node", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "BENCH_VLLM_ENGINE": json.dumps({"enforce_eager": True}),
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    command = [*launcher, __file__, "--serve", str(out), "--threads", str(threads), "--model", args.model,
               "--limit", str(args.limit), "--data-dir", str(args.data_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=positive_int, default=32, help="samsum eval examples")
    parser.add_argument("--replicas", type=positive_int, default=len(os.sched_getaffinity(0)),
                        help="processes for the replicated setting (default: the cores this process may use)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # one setting's child process
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.model, args.limit, str(args.data_dir), args.serve, args.threads)
    if args.replicas > len(os.sched_getaffinity(0)):
        raise SystemExit(f"error: --replicas {args.replicas} is more than the {len(os.sched_getaffinity(0))} cores "
                         "this process may use (each replica gets one core of its own)")

    from harness.backends.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(args.model))
    n = args.replicas
    settings = (("1 engine, 1 thread", 1, 1), (f"1 engine, {n} threads", 1, n), (f"{n} replicas x 1 thread", n, 1))
    print(f"{args.model}, samsum prompt baseline via vLLM (eager), {args.limit} examples, greedy, fp32, "
          f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}")
    print("| setting | outputs = 1-engine | ex/s | new tok/s | stage s | engine start s |\n|---|---|---|---|---|---|")
    reference: list[str] | None = None
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, processes, threads) in enumerate(settings):
            result = setting(f"setting{index}", processes, threads, args, Path(folder))
            outputs, info = result["outputs"], result["info"]
            reference = reference or outputs
            same = sum(a == b for a, b in zip(outputs, reference))
            eval_seconds = len(outputs) / info["examples_per_second"]
            tokens = sum(len(tokenizer(text, add_special_tokens=False).input_ids) for text in outputs)
            print(f"| {name} | {same}/{len(outputs)} | {info['examples_per_second']:.2f} | {tokens / eval_seconds:.1f} | "
                  f"{result['stage_seconds']:.0f} | {info['engine_start_seconds']:.0f} |", flush=True)


if __name__ == "__main__":  # vLLM's engine may spawn processes: this guard keeps them from re-running main
    run_main(main)
