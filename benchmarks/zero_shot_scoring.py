"""Zero-shot classification scoring: bench's scorer vs lm-evaluation-harness's HF backend.

Same model, same rendered prompts, same verbalizers, same batch size, same precision (fp32 on a
CPU; on a GPU bf16: bench autocasts, lm-eval loads bf16 weights), same device; each side runs
`--repeats` times and the median wall time is compared. Timed: from the rendered prompt texts to the scores (tokenizing included) on a model already loaded; lm-eval's
task-index set-up (`TaskManager`, which reads all of lm-eval's bundled task configs and is paid on
every call) is timed apart and shown in its own column, not in the speed-up. lm-eval gets a
local custom task (YAML + JSONL written to a temp folder) whose `doc_to_text` is the exact prompt
bench scores, so accuracy must agree to float noise (target: within 0.5 points). Hooks count the
token positions each side pushes through the model body and the LM head; "FLOP bound" is the
speed-up the two sides' forward FLOPs allow at equal FLOP rates (what bounds a speed-up).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/zero_shot_scoring.py \
        --data-dir ../shared/data --model smollm2 --cases sst2,sst2-5shot,ag_news,goemotions16

Needs `pip install "lm-eval>=0.4,<0.5"`. Cases: imdb (test, 25,000; a GPU case), sst2 (validation, 872, one-token labels),
sst2-5shot (5 demonstrations: a long shared prefix), ag_news (multi-token label names),
goemotions16 (16 labels). `--limit N` caps the examples per case.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_data_dir, choice_list, positive_int, run_main  # noqa: E402

CASES = {"imdb": ("imdb", {}, 0), "sst2": ("sst2", {}, 0), "sst2-5shot": ("sst2", {}, 5), "ag_news": ("ag_news", {}, 0),
         "goemotions16": ("goemotions", {"labels": 16}, 0)}


def prompts_for(case: str, data_dir: Path, limit: int | None, tokenizer, max_length: int):
    """The rendered prompt texts bench scores (demos included), their gold labels, the spec."""
    from harness.task.data import build_splits
    from harness.task.prompts import build_contexts, choose_shots
    from harness.task.registry import get_task

    name, options, shots = CASES[case]
    spec = get_task(name, **options)
    splits = build_splits(spec, data_dir, train_samples=2000, eval_samples=limit, validation_samples=10, seed=0)
    demos = choose_shots(splits.demos_from, shots, len(spec.kind.labels), seed=0)  # as `bench run` picks them
    contexts = build_contexts(spec, tokenizer, splits.eval, demos, max_length)
    texts = [tokenizer.decode(ids) for ids in contexts]
    return spec, texts, [e.label for e in splits.eval]


class WorkCounter:
    """Counts the token positions a model's body and its LM head process (padding included), by hooks.

    Times alone cannot say whether a speed-up is bounded; these counts can: the forward costs about
    2 x (non-embedding body parameters) FLOPs per body position plus 2 x (head parameters) per head
    position, so the ratio of the two sides' totals is the speed-up that equal FLOP rates would give.
    """

    def __init__(self, model) -> None:
        self.body_positions = 0
        self.head_positions = 0
        body, head = model.get_decoder(), model.get_output_embeddings()
        self.body_params = sum(p.numel() for p in body.parameters()) - model.get_input_embeddings().weight.numel()
        self.head_params = head.weight.numel()
        self._hooks = [body.register_forward_pre_hook(self._count_body, with_kwargs=True),
                       head.register_forward_pre_hook(self._count_head)]

    def _count_body(self, _module, args, kwargs) -> None:
        tokens = kwargs.get("input_ids")
        tokens = tokens if tokens is not None else (args[0] if args else kwargs["inputs_embeds"])
        self.body_positions += tokens.shape[0] * tokens.shape[1]

    def _count_head(self, _module, args) -> None:
        self.head_positions += args[0].shape[:-1].numel()

    def reset(self) -> None:
        self.body_positions = self.head_positions = 0

    @property
    def flops(self) -> float:
        return 2.0 * (self.body_params * self.body_positions + self.head_params * self.head_positions)


def run_bench(model, tokenizer, spec, texts, batch_size: int, precision: str) -> tuple[float, list[list[float]]]:
    from harness.backends.hf import score_causal
    from harness.backends.precision import autocast
    from harness.task.prompts import verbalizer_ids

    device = next(model.parameters()).device
    started = time.perf_counter()
    contexts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    with autocast(precision, device):
        scores = score_causal(model, contexts, verbalizer_ids(spec, tokenizer), tokenizer.pad_token_id, batch_size)
    seconds = time.perf_counter() - started
    return seconds, scores


def run_lm_eval(peer_model, tokenizer_dir: str, spec, texts, golds, batch_size: int,
                workdir: Path) -> tuple[float, float, float]:
    """lm-eval's HF backend on the already loaded model (as bench gets it: load time counts for neither)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = workdir / "docs.jsonl"
    data.write_text("".join(json.dumps({"prompt": t, "label": g}) + "\n" for t, g in zip(texts, golds)))
    choices = [v[1:] if v.startswith(" ") else v for v in spec.kind.verbalizers]
    (workdir / "bench_case.yaml").write_text(
        "task: bench_case\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{prompt}}"\n'
        f"doc_to_choice: {json.dumps(choices)}\n"
        "doc_to_target: label\ntarget_delimiter: \" \"\n"
        "metric_list:\n  - metric: acc\n")
    started = time.perf_counter()
    tasks = TaskManager(include_path=str(workdir))  # indexes lm-eval's own task folder: set-up, not scoring
    setup = time.perf_counter() - started
    started = time.perf_counter()
    peer = HFLM(pretrained=peer_model, tokenizer=tokenizer_dir, batch_size=batch_size)
    result = lm_eval.simple_evaluate(model=peer, tasks=["bench_case"], task_manager=tasks, bootstrap_iters=0,
                                     log_samples=False)
    seconds = time.perf_counter() - started
    return seconds, result["results"]["bench_case"]["acc,none"], setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--cases", type=choice_list(CASES), default="sst2,sst2-5shot,ag_news,goemotions16",
                        help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--limit", type=positive_int,
                        help="examples per case (default: all of sst2 validation and imdb test, 500 for the others)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--max-length", type=positive_int, default=512)
    parser.add_argument("--precision", default="auto",
                        help="auto (bf16 on a GPU, else fp32): bench autocasts, lm-eval loads the weights in it")
    args = parser.parse_args()

    import logging

    import torch

    from transformers import AutoModelForCausalLM

    from harness.backends.models import load_lm, load_tokenizer, resolve_model
    from harness.backends.precision import resolved_precision
    from harness.run.stages import device as bench_device

    logging.getLogger("lm-eval").setLevel(logging.ERROR)
    torch.set_grad_enabled(False)
    ref = resolve_model(args.model)
    tokenizer = load_tokenizer(ref)
    device = bench_device()  # the device `bench run` uses
    precision = resolved_precision(args.precision, device)
    model = load_lm(ref).to(device).eval()
    # lm-eval's usual way to run in bf16 is bf16 weights (its dtype=bfloat16); fp32 otherwise.
    peer_model = AutoModelForCausalLM.from_pretrained(
        ref.source, dtype=torch.bfloat16 if precision == "bf16" else torch.float32).to(device).eval()
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU threads {torch.get_num_threads()}"
    print(f"model {args.model} ({ref.source}), {precision}, {where}, batch {args.batch_size}, median of {args.repeats}")
    bench_work, peer_work = WorkCounter(model), WorkCounter(peer_model)
    print("| case | n | labels | bench s | lm-eval s | speed-up (lm-eval s / bench s) | bench acc | lm-eval acc "
          "| lm-eval set-up s "
          "| body positions bench / lm-eval | head positions bench / lm-eval | FLOP bound |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        limit = args.limit or (None if case.startswith(("sst2", "imdb")) else 500)
        spec, texts, golds = prompts_for(case, args.data_dir, limit, tokenizer, args.max_length)
        bench_times, lm_times, setups, bench_acc, lm_acc = [], [], [], 0.0, 0.0
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                bench_work.reset()
                peer_work.reset()
                seconds, scores = run_bench(model, tokenizer, spec, texts, args.batch_size, precision)
                bench_times.append(seconds)
                bench_acc = sum(max(range(len(s)), key=s.__getitem__) == g for s, g in zip(scores, golds)) / len(golds)
                seconds, lm_acc, setup = run_lm_eval(peer_model, ref.source, spec, texts, golds, args.batch_size,
                                                     Path(tmp))
                lm_times.append(seconds)
                setups.append(setup)
                print(f"  {case}: bench {bench_times[-1]:.1f} s (acc {bench_acc:.4f}), lm-eval {seconds:.1f} s "
                      f"(acc {lm_acc:.4f})", file=sys.stderr, flush=True)  # stdout keeps the table whole
        b, lm = statistics.median(bench_times), statistics.median(lm_times)
        print(f"| {case} | {len(texts)} | {len(spec.kind.labels)} | {b:.1f} | {lm:.1f} | {lm / b:.2f}x | "
              f"{bench_acc:.4f} | {lm_acc:.4f} | {statistics.median(setups):.1f} "
              f"| {bench_work.body_positions:,} / {peer_work.body_positions:,} "
              f"| {bench_work.head_positions:,} / {peer_work.head_positions:,} "
              f"| {peer_work.flops / bench_work.flops:.2f}x |", flush=True)


if __name__ == "__main__":
    run_main(main)
