"""Fine-tuning throughput: bench's training loop vs the seeds' recipe (Hugging Face Trainer,
`padding="max_length"`, default collator), same model, data, epochs, batch size, lr and seed.

Both fine-tune a new classification head + full weights on the same IMDB train sample and are
then evaluated on the same held-out sample of IMDB's test split (both end on their final weights);
the figure of merit is real (non-padding) train tokens per second, and accuracy must agree within
about 1 point. Each seed is one run of each recipe
(seeds differ in data order and dropout); a few optimizer steps leave a seed spread of ~10 points,
so a matched-accuracy comparison needs ~100+ steps (2,000 examples here: ~2 h on a 2-core CPU).

    HF_HUB_OFFLINE=1 python benchmarks/finetune_throughput.py --model minilm \
        --train-samples 2000 --validation-samples 500

Levers on bench's side: dynamic padding to the longest row of each batch, length-grouped batches
(shuffled windows), tokenize once; on a GPU bf16 autocast (Trainer gets its bf16 flag: same
precision both sides), SDPA attention and fused AdamW.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_data_dir,
    keep_final_weights,
    positive_float,
    positive_int,
    run_main,
)


def splits(data_dir: Path, train: int, validation: int):
    from harness.task.data import build_splits
    from harness.task.registry import get_task

    spec = get_task("imdb")
    built = build_splits(spec, data_dir, train_samples=train, eval_samples=validation, validation_samples=10, seed=0)
    return spec, built


def accuracy(model, tokenizer, examples, max_length: int, precision: str) -> float:
    from harness.backends.base import HeadScores
    from harness.backends.hf import HFBackend

    backend = HFBackend(model, tokenizer, False, 32, precision)
    rows = backend.head_scores([HeadScores(tuple(e.texts), max_length) for e in examples])
    return sum(max(range(len(row)), key=row.__getitem__) == e.label for row, e in zip(rows, examples)) / len(examples)


def run_bench(ref, spec, data, config, device) -> tuple[float, int, float]:
    from harness.train.loop import train
    from harness.train.methods import apply_method
    from harness.backends.models import load_classifier, load_tokenizer
    from harness.run.stages import train_items

    tokenizer = load_tokenizer(ref)
    model = apply_method(load_classifier(ref, spec.kind.labels, tokenizer.pad_token_id, seed=0).to(device), config,
                         "SEQ_CLS")
    items = train_items(spec, ref, config, tokenizer, data.train)
    started = time.perf_counter()
    result = train(model, items, config, tokenizer.pad_token_id, keep_final_weights(), log=lambda _: None,
                   criterion="f1_macro")
    seconds = time.perf_counter() - started
    return seconds, result.train_tokens, accuracy(model, tokenizer, data.eval, config.max_length, config.precision)


def run_trainer(ref, spec, data, config, device, workdir: str) -> tuple[float, int, float]:
    """The seeds' recipe: tokenize with padding="max_length", Trainer with its default collator."""
    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from harness.backends.models import load_classifier, load_tokenizer

    tokenizer = load_tokenizer(ref)
    model = load_classifier(ref, spec.kind.labels, tokenizer.pad_token_id, seed=0)
    rows = datasets.Dataset.from_dict({"text": [e.texts[0] for e in data.train], "label": [e.label for e in data.train]})
    encoded = rows.map(lambda batch: tokenizer(batch["text"], padding="max_length", truncation=True,
                                               max_length=config.max_length), batched=True, remove_columns=["text"])
    real_tokens = sum(sum(mask) for mask in encoded["attention_mask"])
    arguments = TrainingArguments(output_dir=workdir, per_device_train_batch_size=config.batch_size,
                                  num_train_epochs=config.epochs, learning_rate=config.lr,
                                  warmup_steps=int(config.warmup_ratio * math.ceil(len(rows) / config.batch_size)),
                                  weight_decay=config.weight_decay, lr_scheduler_type="linear", seed=config.seed,
                                  save_strategy="no", report_to=[], logging_strategy="no",
                                  use_cpu=device.type == "cpu", bf16=config.precision == "bf16",
                                  disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=arguments, train_dataset=encoded)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its own summary dict
        trainer.train()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seconds, int(real_tokens * config.epochs), accuracy(model, tokenizer, data.eval, config.max_length,
                                                               config.precision)


def seed_list(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(parser)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-samples", type=positive_int, default=400)
    parser.add_argument("--validation-samples", type=positive_int, default=300,
                        help="held-out examples (a sample of imdb's test split) both recipes are scored on")
    parser.add_argument("--max-length", type=positive_int, default=512)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=positive_float, default=1.0)
    parser.add_argument("--seeds", default="0,1,2", type=seed_list,
                        help="one run per recipe per seed (data order and dropout; the initial weights are the "
                             "same): throughput is the median over seeds, accuracy is shown per seed")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on a GPU, else fp32) | fp32 | bf16")
    args = parser.parse_args()

    import tempfile

    import torch

    from harness.options import RunConfig
    from harness.backends.models import resolve_model
    from harness.backends.precision import resolved_precision
    from harness.run.stages import device as bench_device

    device = bench_device()  # the device `bench run` uses
    precision = resolved_precision(args.precision, device)
    ref = resolve_model(args.model)
    spec, data = splits(args.data_dir, args.train_samples, args.validation_samples)
    config = replace(RunConfig(task="imdb", model=args.model, method="full", objective="head"), lr=args.lr,
                     batch_size=args.batch_size, max_length=args.max_length, epochs=args.epochs, weight_decay=0.01,
                     evals_per_epoch=1, warmup_ratio=0.06, precision=precision)
    print(f"imdb, {args.model} full fine-tune, {len(data.train)} train / {len(data.eval)} held-out (test sample), "
          f"max length {args.max_length}, batch {args.batch_size}, {args.epochs:g} epoch(s), lr {args.lr:g}, "
          f"{precision} on "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'}, "
          f"seeds {', '.join(map(str, args.seeds))}")
    results = {"bench": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        # One short untimed run of each recipe first: one-time costs (lazy imports, kernel and
        # allocator set-up) would otherwise land on whichever recipe runs first.
        warm = replace(data, train=data.train[:2 * config.batch_size], eval=data.eval[:8])
        run_bench(ref, spec, warm, replace(config, epochs=1.0), device)
        run_trainer(ref, spec, warm, replace(config, epochs=1.0), device, tmp)
        for seed in args.seeds:
            seeded = replace(config, seed=seed)
            results["bench"].append(run_bench(ref, spec, data, seeded, device))
            results["trainer"].append(run_trainer(ref, spec, data, seeded, device, tmp))
            for name in results:
                seconds, tokens, acc = results[name][-1]
                print(f"  seed {seed} {name}: {seconds:.1f} s, {tokens / seconds:,.0f} real tokens/s, "
                      f"accuracy {acc:.3f}", file=sys.stderr, flush=True)
    print("| recipe | train s (median) | real tokens/s (median) | held-out acc (median) | acc per seed |")
    print("|---|---|---|---|---|")
    rates = {}
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        rates[name] = statistics.median(r[1] / r[0] for r in runs)
        per_seed = " / ".join(f"{r[2]:.3f}" for r in runs)
        print(f"| {name} | {seconds:.1f} | {rates[name]:.0f} | {statistics.median(r[2] for r in runs):.3f} "
              f"| {per_seed} |")
    print(f"bench / Trainer(padding=max_length) throughput: {rates['bench'] / rates['trainer']:.2f}x")


if __name__ == "__main__":
    run_main(main)
