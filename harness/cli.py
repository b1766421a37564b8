"""`bench run|eval|list|report`: parse, call, print. Heavy imports happen inside commands only,
so `bench --help` and `bench list` answer instantly."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from harness.errors import BenchError

RUN_OPTIONS = ("method", "objective", "shots", "train_samples", "eval_samples", "validation_samples", "epochs", "lr",
               "batch_size", "eval_batch_size", "grad_accum", "max_length", "optimizer", "schedule", "warmup_ratio",
               "max_grad_norm", "weight_decay", "evals_per_epoch", "patience", "early_stop_metric", "seed",
               "lora_rank", "lora_alpha", "lora_dropout", "chat_template", "max_new_tokens")
TASK_OPTIONS = ("labels", "mode", "max_response_chars")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task name (see `bench list`)")
    parser.add_argument("--data-dir", help="local datasets folder (one subfolder per dataset); env BENCH_DATA_DIR")
    parser.add_argument("--results", help="results folder (SQLite store + run folders); env BENCH_RESULTS; default ./results")
    parser.add_argument("--preset", default="quick", help="quick (default: minutes on a CPU) or paper (the seeds' settings)")
    parser.add_argument("--labels", type=int, help="task option: number of labels (goemotions: 2, 4, 8, 16)")
    parser.add_argument("--mode", help="task option: squad_v2 span (span head, default) or generate (prompted)")
    parser.add_argument("--max-response-chars", type=int,
                        help="task option: alpaca keeps responses shorter than this (the seed used 512)")
    parser.add_argument("--chat-template", help="text tasks: auto (default: when the tokenizer has one) | on | off")
    parser.add_argument("--max-new-tokens", type=int, help="text tasks: generation length (default per task)")
    parser.add_argument("--baseline", type=_csv, dest="baselines",
                        help="prompt, head or both (comma-separated); default auto: prompt for LMs, head for encoders")
    parser.add_argument("--shots", type=int, help="few-shot demonstrations in the prompt baseline (default 0)")
    parser.add_argument("--train-samples", type=int, help="training examples (class-balanced, seeded)")
    parser.add_argument("--eval-samples", "--limit", type=int, dest="eval_samples", help="eval examples (seeded sample)")
    parser.add_argument("--validation-samples", type=int, help="validation examples for early stopping")
    parser.add_argument("--max-length", type=int, help="max tokens per example (default 128 quick, 512 paper)")
    parser.add_argument("--eval-batch-size", type=int, help="eval batch size (default 32)")
    parser.add_argument("--seed", type=int, help="seed for sampling, init and training (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Zero-shot baseline -> fine-tune -> same eval again -> "
                                     "paired before/after table. Example: bench run sst2 --models smollm2,minilm")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list tasks, model aliases and methods")
    listing.add_argument("what", nargs="?", choices=("tasks", "models", "methods"), help="only this list")

    run = commands.add_parser("run", help="baseline, fine-tune and re-evaluate each model; print the before/after table")
    _common(run)
    run.add_argument("--models", type=_csv, required=True, help="comma-separated aliases, hub ids or local folders")
    run.add_argument("--method", help="full | lora (default) | qlora | freeze:N | head")
    run.add_argument("--objective", help="auto (default: lm for causal/seq2seq models, head for encoders) | head (new classification head) | lm (train the LM on the label verbalizer, prompt masked)")
    run.add_argument("--lr", type=float, help="learning rate (default by method: lora/qlora 5e-4, or 2e-3 with a new head; full 5e-5; freeze 1e-4; head 1e-3)")
    run.add_argument("--epochs", type=float, help="epochs (fractions allowed)")
    run.add_argument("--batch-size", type=int, help="train batch size (default 16)")
    run.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 1)")
    run.add_argument("--optimizer", help="adamw (default) | sgd | sgd-momentum")
    run.add_argument("--schedule", help="linear (default) | cosine | constant, after warmup")
    run.add_argument("--warmup-ratio", type=float, help="fraction of steps warming up (default 0.06)")
    run.add_argument("--max-grad-norm", type=float, help="gradient clipping norm (default 1.0)")
    run.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0; paper 0.01)")
    run.add_argument("--evals-per-epoch", type=int, help="validation evaluations per epoch")
    run.add_argument("--patience", type=int, help="early stopping: evaluations without improvement")
    run.add_argument("--early-stop-metric", help="accuracy or f1_macro (default)")
    run.add_argument("--lora-rank", type=int, help="LoRA rank (default 8)")
    run.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")
    run.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    run.add_argument("--lora-targets", type=_csv, help="module names to adapt (default: per architecture)")

    evaluate = commands.add_parser("eval", help="evaluate a model or a bench checkpoint on a task")
    _common(evaluate)
    evaluate.add_argument("--model", required=True, help="bench checkpoint folder, alias, hub id or local folder")

    rescore = commands.add_parser("rescore", help="recompute a run's metrics from its stored outputs (no model)")
    rescore.add_argument("run", help="run id (a folder name under results/runs)")
    rescore.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    rescore.add_argument("--data-dir", help="local datasets folder; env BENCH_DATA_DIR")

    report = commands.add_parser("report", help="before/after tables from the store (no model loaded)")
    report.add_argument("--task", help="only this task")
    report.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    report.add_argument("--format", default="md", choices=("md", "csv"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.what)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "rescore":
            from harness.rescore import rescore_command

            return rescore_command(args)
        return cmd_report(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed stages are stored; re-run the same command to resume", file=sys.stderr)
        return 130


def cmd_list(what: str | None) -> int:
    from harness.config import METHODS
    from harness.models import ALIASES
    from harness.registry import get_task, task_names

    if what in (None, "tasks"):
        print("tasks:")
        for name in task_names():
            print(f"  {name:<12} {get_task(name).description}")
    if what in (None, "models"):
        print("models (aliases; any hub id or local folder also works):")
        for alias in ALIASES.values():
            print(f"  {alias.name:<14} {alias.hub_id:<40} {alias.note}")
    if what in (None, "methods"):
        print("methods: " + ", ".join(METHODS) + "   baselines: prompt, head   objectives: auto, head, lm")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {name: getattr(args, name, None) for name in RUN_OPTIONS}
    values["baselines"] = args.baselines
    values["lora_targets"] = getattr(args, "lora_targets", None)
    options = tuple((name, task_options(args)[name]) for name in TASK_OPTIONS if name in task_options(args))
    values["task_options"] = options or None
    return values


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in TASK_OPTIONS if getattr(args, name, None) is not None}


def cmd_run(args: argparse.Namespace) -> int:
    from harness.data import data_dir_from
    from harness.pipeline import Runner, plan
    from harness.registry import get_task
    from harness.store import Store, results_dir

    started = time.perf_counter()
    spec = get_task(args.task, **task_options(args))
    data_dir = data_dir_from(args.data_dir)
    planned = plan(spec, list(args.models), _overrides(args), args.preset)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    store = Store(results_dir(args.results))
    try:
        runner = Runner(spec, store, data_dir, log)
        runner.splits(planned[0].config)  # data problems surface before any model loads
        rows = []
        for item in planned:
            records = runner.run(item)
            rows += _compare(store, item.run_id, item.config.to_dict(), records)
        print_and_save(store, spec, rows, runner.splits(planned[0].config), time.perf_counter() - started)
    finally:
        store.close()
    return 0


def _compare(store: Any, run_id: str, config: dict[str, Any], records: dict[str, Any]) -> list[Any]:
    from harness.compare import compare

    return compare(store, run_id, config, records)


def print_and_save(store: Any, spec: Any, rows: list[Any], splits: Any, seconds: float) -> None:
    import hashlib

    from harness.report import (
        csv_table,
        markdown_table,
        sample_outputs,
        sample_predictions,
    )
    from harness.store import atomic_write

    table = markdown_table(rows, splits.notes)
    print(f"\n## {spec.key}: before / after fine-tuning\n")
    print(table)
    texts = {e.id: " / ".join(e.texts) for e in splits.eval}
    for row in rows:
        if spec.is_classification:
            print(sample_predictions(store, row, spec.kind.labels, texts) + "\n")
        else:
            references = {e.id: " | ".join(e.references) or "(no answer)" for e in splits.eval}
            print(sample_outputs(store, row, texts, references) + "\n")
    name = f"{spec.key}__" + hashlib.sha256("|".join(r.run_id + r.baseline for r in rows).encode()).hexdigest()[:8]
    atomic_write(store.root / "tables" / f"{name}.md", f"# {spec.key}: before / after fine-tuning\n\n{table}")
    atomic_write(store.root / "tables" / f"{name}.csv", csv_table(rows))
    print(f"tables: {store.root / 'tables' / name}.md and .csv   wall time {seconds:.1f} s")


def cmd_eval(args: argparse.Namespace) -> int:
    from harness.eval_command import evaluate_command

    return evaluate_command(args, _overrides(args))


def cmd_report(args: argparse.Namespace) -> int:
    from harness.compare import compare
    from harness.report import csv_table, markdown_table
    from harness.store import Store, results_dir

    root = results_dir(args.results)
    if not (root / "bench.sqlite").is_file():
        raise BenchError(f"no results store at {root}/bench.sqlite; run `bench run` first or pass --results")
    store = Store(root)
    try:
        rows = []
        for run in store.runs(args.task):
            stages = store.stages_of(run["run_id"])
            if "finetuned" not in stages:
                continue
            records = {stage: store.stage(run["run_id"], stage) for stage in stages}
            rows += compare(store, run["run_id"], run["config"], records)
        if not rows:
            raise BenchError("no complete runs in the store" + (f" for task {args.task}" if args.task else ""))
        print(markdown_table(rows) if args.format == "md" else csv_table(rows), end="")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
