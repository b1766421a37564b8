"""`bench list|run|sweep|eval|rescore|report|judge|export|compare|power|push`: parse, call, print. Heavy imports happen
inside commands only, so `bench --help` and `bench list` answer instantly."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.artefacts import DISK_ERRNOS, disk_advice, disk_message
from harness.errors import BenchError
from harness.options import TASK_OPTIONS, boolean
from harness.commands.judge import add_judge_options
from harness.run.launchers import add_launcher_options, check_launcher

RUN_OPTIONS = ("method", "objective", "shots", "train_samples", "eval_samples", "validation_samples", "epochs", "lr",
               "batch_size", "eval_batch_size", "grad_accum", "max_length", "optimizer", "schedule", "warmup_ratio",
               "max_grad_norm", "weight_decay", "evals_per_epoch", "patience", "early_stop_metric", "seed",
               "train_seed", "lora_rank", "lora_alpha", "lora_dropout", "chat_template", "max_new_tokens", "precision",
               "compile")
# Grid keys besides RUN_OPTIONS and TASK_OPTIONS: the model, and freeze=N for method=freeze:N.
GRID_EXTRAS: dict[str, Callable[[str], Any]] = {"model": str, "freeze": int}
REPORT_FORMATS = ("md", "csv", "html", "latex")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _baselines(value: str) -> tuple[str, ...]:
    """--baseline prompt,head; `both` is short for that pair."""
    return tuple(dict.fromkeys(part for name in _csv(value) for part in
                               (("prompt", "head") if name == "both" else (name,))))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="task name (see `bench list`)")
    parser.add_argument("--data-dir", help="local datasets folder (one subfolder per dataset); env BENCH_DATA_DIR")
    parser.add_argument("--results", help="results folder (SQLite store + run folders); env BENCH_RESULTS; default ./results")
    parser.add_argument("--preset", default="quick", help="quick (default: minutes on a CPU) or paper (the seeds' settings)")
    parser.add_argument("--labels", type=int, help="task option: number of labels (goemotions: 2, 4, 8, 16)")
    parser.add_argument("--mode", help="task option: squad_v2 span (span head, default) or generate (prompted)")
    parser.add_argument("--max-response-chars", type=int,
                        help="task option: alpaca keeps responses shorter than this (the seed used 512)")
    parser.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                        help="an option of a task plugin's own (a keyword argument of its factory), e.g. "
                             "--task-option column=title; repeatable; a grid axis in sweeps as KEY=V1,V2")
    parser.add_argument("--chat-template", help="text tasks: auto (default: when the tokenizer has one) | on | off")
    parser.add_argument("--max-new-tokens", type=int, help="text tasks: generation length (default per task)")
    parser.add_argument("--precision", help="auto (default: bf16 autocast on a GPU that has it, else fp32) | fp32 | bf16")
    parser.add_argument("--baseline", type=_baselines, dest="baselines",
                        help="prompt, head or both (comma-separated); default auto: prompt for LMs, head for encoders")
    parser.add_argument("--shots", type=int, help="few-shot demonstrations in the prompt baseline (default 0)")
    parser.add_argument("--train-samples", type=int, help="training examples (class-balanced, seeded)")
    parser.add_argument("--eval-samples", "--limit", type=int, dest="eval_samples", help="eval examples (seeded sample)")
    parser.add_argument("--validation-samples", type=int, help="validation examples for early stopping")
    parser.add_argument("--max-length", type=int, help="max tokens per example (default 128 quick, 512 paper, or the task's: "
                             "alpaca, samsum, squad_v2, wikitext set their own)")
    parser.add_argument("--eval-batch-size", type=int, help="eval batch size (default 32, or the task's)")
    parser.add_argument("--seed", type=int, help="seed for sampling, init and training (default 0); see --train-seed")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow models whose repository ships its own Python code (off: such models are refused)")
    parser.add_argument("--force-new", action="store_true",
                        help="start the run(s) over: discard what the store holds of them (stages, checkpoint, "
                             "training state) instead of resuming; needed when the data files changed since")
    add_quiet_option(parser)


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or progress lines on stderr (errors, warnings and tables still show)")


class Parser(argparse.ArgumentParser):
    """An argparse parser that takes no abbreviations, and its subcommands' parsers too (argparse
    builds those of the parent's class): a prefix (`--model` for `--models`) must not silently pick
    an option, nor change meaning when a longer option is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench", description="Zero-shot baseline -> fine-tune -> same eval again -> "
                    "paired before/after table. Example: bench run sst2 --models smollm2,minilm")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list tasks, model aliases and methods")
    listing.add_argument("what", nargs="?", choices=("tasks", "models", "methods"), help="only this list")

    run = commands.add_parser("run", help="baseline, fine-tune and re-evaluate each model; print the before/after "
                              "table", description="Options can come from a file: bench run --config exp.yaml "
                              "(keys are the options' names, plus task and models; flags typed here override it). "
                              "Every run folder keeps the config.yaml that re-runs it.")
    _common(run)
    run.add_argument("--models", "--model", type=_csv, required=True,
                     help="comma-separated aliases, hub ids or local folders")
    _training(run)
    add_judge_options(run, required=False)
    _lm_eval_options(run)

    sweep = commands.add_parser("sweep", help="a grid of runs (--grid lora_rank=2,4 lr=1e-4,5e-5): table + heatmap",
                                description="Every cell is an ordinary `bench run` in the store; re-running the same "
                                "sweep skips what is complete. Example: bench sweep sst2 --models minilm "
                                "--grid lora_rank=2,4,8 lr=1e-4,5e-5")
    _common(sweep)
    sweep.add_argument("--models", "--model", type=_csv, help="comma-separated models (or a model=A,B grid axis)")
    sweep.add_argument("--grid", nargs="+", action="extend", required=True, metavar="KEY=V1,V2",
                       help="axes: any run option (lora_rank, lr, batch_size, method, ...), freeze=N (method "
                            "freeze:N), a task option (labels) or model; the heatmap uses the first two, seed "
                            "axes last (seed or train_seed axes add a mean ± sd table per setting)")
    sweep.add_argument("--metric", help="heatmap/table metric: the fine-tuned headline (default), delta, before, "
                                        "or a metric name such as f1_macro")
    _training(sweep)
    _lm_eval_options(sweep)
    add_launcher_options(sweep)

    evaluate = commands.add_parser("eval", help="evaluate a model or a bench checkpoint on a task")
    _common(evaluate)
    evaluate.add_argument("--model", "--models", required=True, help="bench checkpoint folder (evaluated with its "
                          "run's sample sizes, seed, shots and lengths unless given), alias, hub id or local folder")
    evaluate.add_argument("--label-map", help="a checkpoint of another classification task: its labels as this "
                          "task's, SOURCE=TARGET,... (not needed when both have the same labels)")
    evaluate.set_defaults(preset=None)  # a checkpoint's run preset, else quick

    rescore = commands.add_parser("rescore", help="recompute a run's metrics from its stored outputs (no model)")
    rescore.add_argument("run", help="run id (a folder name under results/runs)")
    rescore.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    rescore.add_argument("--data-dir", help="local datasets folder; env BENCH_DATA_DIR")

    report = commands.add_parser("report", help="before/after table + leaderboard from the store (no model loaded)",
                                 description="md and latex print both tables; csv prints one (--table); html writes "
                                 "a self-contained report to results/reports/<name>.html (or --out), printing the path")
    _selection(report)
    report.add_argument("--sweep", help="only this sweep's runs, with its table and heatmap (a name under "
                                        "results/sweeps)")
    report.add_argument("--format", default="md", choices=REPORT_FORMATS)
    report.add_argument("--table", choices=("comparison", "leaderboard", "sweep"), default="comparison",
                        help="csv: which table (default comparison, the before/after rows)")
    report.add_argument("--out", help="write to this file instead (html default: results/reports/<name>.html)")
    report.add_argument("--data-dir", help="datasets folder, to show example texts in html sample predictions; "
                                           "env BENCH_DATA_DIR")
    report.add_argument("--adjust", default="holm", metavar="holm|bh|none",
                        help="adjusted p column over each table's comparisons: holm (default, family-wise error), "
                             "bh (false discovery rate) or none")

    judge = commands.add_parser("judge", help="LLM-judge a run's stored generations (baseline and fine-tuned)",
                                description="Scores stored outputs 0-100 against the reference and compares "
                                "baseline with fine-tuned in both orders. Example: bench judge alpaca --judge hf:smollm2")
    judge.add_argument("target", metavar="RUN_OR_TASK", help="a run id, or a task name (all its runs in the store)")
    judge.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")
    judge.add_argument("--data-dir", help="local datasets folder (references); env BENCH_DATA_DIR")
    add_judge_options(judge, required=True)
    add_quiet_option(judge)

    compare = commands.add_parser("compare", help="two stored evaluations of one task, paired on their shared "
                                  "examples: scores, delta, p, MDE, equivalence", description="A and B: RUN_ID (its "
                                  "fine-tuned stage), RUN_ID:baseline-prompt, RUN_ID:baseline-head, RUN_ID:finetuned, "
                                  "or a `bench eval` record id; or --task T --by method|model for every pair of runs "
                                  "that differ only in that. Example: bench compare RUN_A RUN_B --margin 0.02")
    compare.add_argument("a", nargs="?", metavar="A", help="first stage (the reference)")
    compare.add_argument("b", nargs="?", metavar="B", help="second stage; the delta is B - A")
    compare.add_argument("--task", help="with --by: the task whose runs are paired")
    compare.add_argument("--by", metavar="method|model", help="pair the task's runs that differ only in this")
    compare.add_argument("--margin", metavar="M", help="equivalence margin: TOST verdict equivalent within ±M, "
                         "different, or inconclusive")
    compare.add_argument("--adjust", default="holm", metavar="holm|bh|none",
                         help="p-value adjustment over several pairs (default holm)")
    compare.add_argument("--format", default="terminal", metavar="terminal|md|csv", help="default terminal")
    compare.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")

    power = commands.add_parser("power", help="how many eval examples a paired comparison needs to detect a delta",
                                description="80% power, two-sided alpha 0.05; from a stored run's observed "
                                "discordance (accuracy) or SD of per-example differences, else the worst case. "
                                "Example: bench power sst2 --delta 0.02 --from RUN_ID")
    power.add_argument("task", help="task name (see `bench list`)")
    power.add_argument("--delta", required=True, help="the difference to detect, on the metric's scale (0.02 = 2 points "
                                                     "of accuracy)")
    power.add_argument("--from", dest="run", metavar="RUN", help="a stored run whose baseline vs fine-tuned "
                                                                 "disagreement to plan from")
    power.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")

    push = commands.add_parser("push", help="upload a run's checkpoint folder (with its model card) to the "
                               "Hugging Face Hub; token from HF_TOKEN or `hf auth login`")
    push.add_argument("run", help="run id (a folder name under results/runs)")
    push.add_argument("--repo", required=True, help="hub model repository, NAME or ORG/NAME (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; upload nothing")
    push.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")

    export_task = commands.add_parser("export-task", help="write a classification task as an lm-eval YAML task "
                                      "(bench's prompt, verbalizers and eval examples)",
                                      description="Example: bench export-task sst2 --to lm_tasks/ --data-dir DATA; "
                                      "then lm_eval --tasks bench_sst2 --include_path lm_tasks/")
    _common(export_task)
    export_task.add_argument("--to", required=True, help="folder to create/fill (no '..' components)")

    export = commands.add_parser("export", help="write the leaderboard and before/after tables (and the judge table) "
                                               "as CSV and markdown, per-class scores as CSV, to a folder")
    _selection(export)
    export.add_argument("--to", required=True, help="folder to create/fill (no '..' components)")
    return parser


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="only this task (a name such as goemotions matches all its variants)")
    parser.add_argument("--runs", type=_csv, help="only these run ids (comma-separated)")
    parser.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")


def _training(run: argparse.ArgumentParser) -> None:
    """Options of `run` and `sweep` (a sweep's fixed settings; any of them can be a grid axis)."""
    run.add_argument("--config", metavar="FILE", help="experiment file (YAML, or TOML for .toml): the task, models, "
                     "any option by name (lora_rank: 8), for sweeps a grid: {lr: [1e-4, 5e-5]}; flags override it")
    run.add_argument("--log-to", type=_csv, help="also log curves and metrics to tensorboard and/or wandb (optional)")
    run.add_argument("--method", help="full | lora (default) | qlora | freeze:N | head")
    run.add_argument("--objective", help="auto (default: lm for causal/seq2seq models, head for encoders, --method head and squad_v2 span) | head (new classification head) | lm (train the LM on the label verbalizer, prompt masked)")
    run.add_argument("--lr", type=float, help="learning rate (quick default by method: lora/qlora 5e-4, or 2e-3 with a new head; full 5e-5; freeze 1e-4; head 1e-3; paper: the task's, e.g. 2e-5)")
    run.add_argument("--epochs", type=float, help="epochs (fractions allowed)")
    run.add_argument("--batch-size", type=int, help="train batch size (default 16, or the task's)")
    run.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default 1)")
    run.add_argument("--optimizer", help="adamw (default) | sgd | sgd-momentum")
    run.add_argument("--schedule", help="linear (default) | cosine | constant, after warmup")
    run.add_argument("--warmup-ratio", type=float, help="fraction of steps warming up (default 0.06)")
    run.add_argument("--max-grad-norm", type=float, help="gradient clipping norm (default 1.0)")
    run.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0; paper 0.01)")
    run.add_argument("--evals-per-epoch", type=int, help="validation evaluations per epoch")
    run.add_argument("--patience", type=int, help="early stopping: evaluations without improvement")
    run.add_argument("--early-stop-metric", help="auto (default: f1_macro for classification, held-out loss for text "
                                                 "tasks) | accuracy | f1_macro (classification) | loss (text tasks)")
    run.add_argument("--train-seed", type=int,
                     help="seed for training only (new heads and adapters, batch order, dropout; default: --seed): "
                          "vary it to measure fine-tuning variance on the same data, e.g. --grid train_seed=0,1,2")
    run.add_argument("--lora-rank", type=int, help="LoRA rank (default 8)")
    run.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")
    run.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    run.add_argument("--lora-targets", type=_csv, help="module names to adapt (default: per architecture)")
    run.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the model for training (pays on a GPU for long runs; costs compile time)")


def grid_types() -> dict[str, Callable[[str], Any]]:
    """Grid key -> value converter: the run and task options `bench run` takes, with the types
    argparse applies to them, so a grid value parses exactly as the option would."""
    options = Parser(add_help=False)
    _common(options)
    _training(options)
    converters = {action.dest: boolean if isinstance(action, argparse._StoreTrueAction) else action.type or str
                  for action in options._actions if action.option_strings}
    allowed = {name: converters[name] for name in RUN_OPTIONS + TASK_OPTIONS if name in converters}
    return {**allowed, **GRID_EXTRAS}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from harness.progress import reporting

    try:
        with reporting(quiet=bool(getattr(args, "quiet", False))):
            return dispatch(args)
    except BenchError as exc:
        print(f"error: {masked(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed stages are stored; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`bench list | head -1`): stop quietly like any Unix tool, and point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a read-only or full disk, a folder where a file goes: one line, no traceback
        if exc.errno not in DISK_ERRNOS:  # anything else (a file bench expected, a bug) keeps its traceback
            if print_masked_traceback(exc):
                return 1
            raise
        print(f"error: {masked(os_error(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the store's disk filled up in the middle of a transaction
        if not store_failure(exc):
            if print_masked_traceback(exc):
                return 1
            raise  # SQL that is wrong (a bug) is not the store's disk: keep the traceback
        print(f"error: results store: {masked(str(exc))}{store_advice(exc)}", file=sys.stderr)
        return 2


def dispatch(args: argparse.Namespace) -> int:
    """The command's function; progress bars and lines (harness.progress) are set up by `main`."""
    if args.command == "list":
        return cmd_list(args.what)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "eval":
        return cmd_eval(args)
    if args.command == "sweep":
        return cmd_sweep(args)
    if args.command == "rescore":
        from harness.run.rescore import rescore_command

        return rescore_command(args)
    if args.command == "push":
        from harness.commands.push import push_command

        return push_command(args)
    if args.command == "export":
        return cmd_export(args)
    if args.command == "export-task":
        from harness.commands.export_task import export_task_command

        return export_task_command(args, _overrides(args), output_path("--to", args.to))
    if args.command == "power":
        from harness.commands.power import power_command

        return power_command(args)
    if args.command == "compare":
        from harness.commands.compare import compare_command

        return compare_command(args)
    if args.command == "judge":
        from harness.commands.judge import judge_command

        return judge_command(args)
    return cmd_report(args)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with `run`/`sweep --config FILE` read first: the file's values become the
    command's defaults, so flags typed here override them."""
    parser = build_parser()
    command = next(iter(argv), None)
    if command not in ("run", "sweep"):
        return parser.parse_args(argv)
    from harness.commands.experiment import apply_file, config_path, merge_repeated, read_file

    path = config_path(argv[1:])
    if path is None:
        return parser.parse_args(argv)
    subcommand = subcommands(parser)[command]
    repeated = apply_file(subcommand, path, read_file(path))
    args = parser.parse_args(argv)
    merge_repeated(args, repeated)
    if args.task is None:
        subcommand.error("the following arguments are required: task (or a `task:` key in the --config file)")
    return args


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def masked(text: str) -> str:
    """`text` without the value of any credential in the environment: the last line of defence,
    for an error raised outside the judge backends' own masking (harness.judging.backend.ask)."""
    from harness.credentials import environment_secrets, mask

    return mask(text, *environment_secrets())


def print_masked_traceback(exc: BaseException) -> bool:
    """A crash's traceback that quotes a credential from the environment is printed masked (True);
    any other keeps the interpreter's own printing (False)."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    hidden = masked(text)
    if hidden == text:
        return False
    print(hidden, end="", file=sys.stderr)
    return True


def store_failure(exc: Exception) -> bool:
    """An sqlite3 error the disk or another process caused (the store's unusable-file codes, busy,
    locked). sqlite3 is looked up, not imported: `bench --help` and `bench list` never load it, and
    only a command that did can raise its errors."""
    sqlite3 = sys.modules.get("sqlite3")
    code = getattr(exc, "sqlite_errorcode", None)
    if sqlite3 is None or not isinstance(exc, sqlite3.Error) or code is None:
        return False
    from harness.store import UNUSABLE_STORE

    return (code & 0xFF) in UNUSABLE_STORE | {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def store_advice(exc: Exception) -> str:
    """What to do when the store's disk is full or read-only ('' for a busy or damaged store)."""
    import errno
    import sqlite3

    code = {sqlite3.SQLITE_FULL: errno.ENOSPC, sqlite3.SQLITE_READONLY: errno.EROFS}.get(
        getattr(exc, "sqlite_errorcode", 0) & 0xFF)
    return f"; {disk_advice(code)}" if code else ""


def os_error(exc: OSError) -> str:
    """`No space left on device: /results/runs/x/metrics.json; free space there ...`, not Python's
    `[Errno 28] ...`."""
    if not exc.strerror:
        return str(exc)
    paths = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    return disk_message(exc.strerror, paths or None, exc.errno)


def cmd_list(what: str | None) -> int:
    from harness.options import METHODS
    from harness.backends.models import ALIASES
    from harness.task.registry import broken_plugins, get_task, task_names

    errors: list[str] = []
    if what in (None, "tasks"):
        print("tasks:")
        for name in task_names():
            try:
                print(f"  {name:<12} {get_task(name).description}")
            except BenchError as exc:  # one broken task is reported, and the others still listed
                print(f"  {name:<12} (cannot be built: see the error below)")
                errors.append(str(exc))
        errors += broken_plugins()
    if what in (None, "models"):
        print("models (aliases; any hub id or local folder also works):")
        for alias in ALIASES.values():
            print(f"  {alias.name:<14} {alias.hub_id:<40} {alias.note}")
    if what in (None, "methods"):
        print("methods: " + ", ".join(METHODS) + "   baselines: prompt, head   objectives: auto, head, lm")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 2 if errors else 0


def _lm_eval_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--lm-eval", type=_csv, help="lm-eval-harness tasks (comma-separated) run on each model "
                         "before and after fine-tuning, paired per item: the general-ability (forgetting) check")
    command.add_argument("--lm-eval-include", help="a folder of lm-eval YAML tasks (local files) for --lm-eval")
    command.add_argument("--lm-eval-limit", type=int, help="the first N documents of each --lm-eval task")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from harness.options import recorded_task_options

    values = {name: getattr(args, name, None) for name in RUN_OPTIONS}
    values["baselines"] = args.baselines
    values["lora_targets"] = getattr(args, "lora_targets", None)
    values["trust_remote_code"] = getattr(args, "trust_remote_code", False) or None
    values["task_options"] = recorded_task_options(task_options(args))
    values["lm_eval"] = getattr(args, "lm_eval", None) or None
    values["lm_eval_include"] = getattr(args, "lm_eval_include", None)
    values["lm_eval_limit"] = getattr(args, "lm_eval_limit", None)
    return values


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given: the flagged ones (--labels, ...) and a plugin's own (--task-option)."""
    from harness.task.registry import parse_task_options

    named = {name: getattr(args, name) for name in TASK_OPTIONS if getattr(args, name, None) is not None}
    return {**named, **parse_task_options(args.task, args.task_option or ())}


def _log(message: str) -> None:
    from harness.progress import log

    log(message)  # above any live progress bar


def _after_run(loggers: Sequence[str], store: Any) -> Callable[[str, dict[str, Any], dict[str, Any]], None]:
    """What happens after each run, besides the store: the optional `--log-to` loggers."""
    def after(run_id: str, config: dict[str, Any], records: dict[str, Any]) -> None:
        if loggers:
            from harness.loggers import log_run

            log_run(loggers, store.root, run_id, config, records, store.curves(run_id))

    return after


def cmd_run(args: argparse.Namespace) -> int:
    from harness.task.data import data_dir_from
    from harness.loggers import check_loggers
    from harness.commands.judge import Judging, check_judgeable, print_judge_table, settings_from
    from harness.run.runner import Runner, plan
    from harness.task.registry import get_task
    from harness.report.tables import print_and_save
    from harness.run.resume import settle_stored_runs
    from harness.store import Store, results_dir

    started = time.perf_counter()
    loggers = check_loggers(args.log_to)
    spec = get_task(args.task, **task_options(args))
    data_dir = data_dir_from(args.data_dir)
    planned = plan(spec, list(dict.fromkeys(args.models)), _overrides(args), args.preset)  # each model once
    judge_settings = settings_from(args)
    if judge_settings is not None:
        check_judgeable(spec)
    store = Store(results_dir(args.results))
    judging = None
    try:
        judging = Judging(judge_settings, store, _log) if judge_settings else None  # a bad spec fails here
        runner = Runner(spec, store, data_dir, _log)
        runner.splits(planned[0].config)  # data problems surface before any model loads
        # every run's stored work checked against this data and config (or discarded) before any runs
        settle_stored_runs(store, [(item.run_id, item.config.to_dict(), runner.splits(item.config))
                                   for item in planned], force_new=args.force_new, log=_log)
        write_run_files(store, [item for item in planned])
        rows = []
        for item in planned:
            records = runner.run(item)
            _after_run(loggers, store)(item.run_id, item.config.to_dict(), records)
            rows += _compare(store, item.run_id, item.config.to_dict(), records)
        name = print_and_save(store, spec, rows, runner.splits(planned[0].config), time.perf_counter() - started)
        if judging is None:
            return 0
        # Judged after every model has trained and its table is out: a judge that fails (a bad key,
        # a server down) costs the judgments, not the other models' runs.
        judged, failed = [], 0
        for item in planned:
            try:
                judged.append(judging.judge_run(item.run_id, spec, runner.splits(item.config).eval))
            except BenchError as exc:
                failed += 1
                print(f"warning: {item.run_id} was not judged: {exc}", file=sys.stderr)
        print_judge_table([record for record in judged if record], store, name)
    finally:
        if judging is not None:
            judging.close()
        store.close()
    if failed:
        print(f"error: {failed} of {len(planned)} runs were not judged (see the warnings above); the runs are "
              f"stored: judge them again with `bench judge {spec.key} --judge ...`", file=sys.stderr)
        return 1
    return 0


def write_run_files(store: Any, planned: Sequence[Any]) -> None:
    """Each planned run's folder gets the config.yaml that re-runs it (`bench run --config ...`),
    once every input has been checked and before its first stage."""
    from harness.commands.experiment import run_file
    from harness.store import atomic_write

    command = subcommands(build_parser())["run"]
    for item in planned:
        store.run_config(item.run_id)  # the store opens first: an unusable one fails before any run folder exists
        atomic_write(store.run_dir(item.run_id) / "config.yaml", run_file(item, command))


def _compare(store: Any, run_id: str, config: dict[str, Any], records: dict[str, Any]) -> list[Any]:
    from harness.compare.paired import compare

    return compare(store, run_id, config, records)


def cmd_eval(args: argparse.Namespace) -> int:
    from harness.commands.eval import evaluate_command

    return evaluate_command(args, _overrides(args))


def _open_store(results: str | None) -> Any:
    """The store of a command that only reads it (report, export): opened read-only, so an archived
    store on a read-only disk reads, and nothing there is migrated or written."""
    from harness.store import Store

    return Store.existing(results, read_only=True)


def _selected(store: Any, args: argparse.Namespace, sweep: Any = None) -> tuple[list[Any], list[Any]]:
    """(runs, comparison rows) chosen by --runs / --task, within a sweep's cells if given; none is an error."""
    from harness.report.leaderboard import collect, select_runs

    chosen = select_runs(store, args.task, tuple(args.runs or ()))
    if sweep is not None:
        cells = {cell.run_id for cell in sweep.cells}
        chosen = [run for run in chosen if run["run_id"] in cells]
    rows = collect(store, chosen)
    if not rows:
        where = f" of sweep {sweep.name}" if sweep is not None else f" for task {args.task}" if args.task else ""
        if args.task and not chosen:
            check_task_name(args.task)
        evals = [run["run_id"] for run in chosen if run["method"] == "eval"]
        if evals and len(evals) == len(chosen):
            raise BenchError(f"{evals[0]} is a `bench eval` record (one evaluation, no before/after to compare): "
                             f"its metrics are in {store.run_dir(evals[0])}/eval/metrics.json")
        raise BenchError("no complete runs (baseline, fine-tune and fine-tuned evaluation) in the store" + where)
    return chosen, rows


def check_task_name(task: str) -> None:
    """--task of a report or export that matched no run: a name no task has is a typo, not an empty store."""
    from harness.task.registry import get_task, task_names

    if not any(task == name or task.startswith(name + "-") for name in task_names()):
        get_task(task)  # the registry's own "unknown task ...; did you mean" line


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.leaderboard import leaderboard, leaderboard_csv, leaderboard_markdown, leaderboard_table
    from harness.commands.judge import judge_markdown, judge_section
    from harness.report.tables import (
        PER_CLASS_TITLE,
        comparison_tables,
        csv_table,
        data_notes,
        markdown_table,
        per_class_table,
        statistics_notes,
        table_notes,
        to_latex,
        to_markdown,
    )

    if args.table == "sweep" and not args.sweep:
        raise BenchError("--table sweep needs --sweep NAME")
    from harness.compare.stats import ADJUSTMENTS

    if args.adjust not in ADJUSTMENTS:
        raise BenchError(f"--adjust {args.adjust}: unknown adjustment; use holm (default), bh or none")
    adjust = args.adjust
    store = _open_store(args.results)
    try:
        plan = results = None
        if args.sweep:
            from harness.commands.sweep import load_plan

            plan = load_plan(store.root, args.sweep)
        runs, rows = _selected(store, args, plan)
        if plan:
            from harness.commands.sweep import results_from_store

            results = results_from_store(store, plan, rows)  # the cells' comparisons made once, in rows
        entries = leaderboard(store, rows)
        judged = judge_section(store, [row.run_id for row in rows]) if args.format in ("md", "latex") else None
        out = args.out
        if args.format == "html":
            text, default = _html_report(store, args, runs, rows, plan, results)
            out = out or str(default)
        elif args.format == "csv":
            text = {"comparison": lambda: csv_table(rows, data_notes(store, rows), adjust),
                    "leaderboard": lambda: leaderboard_csv(entries),
                    "sweep": lambda: _sweep_text(plan, results, "csv")}[args.table]()
        elif args.format == "latex":
            tables = comparison_tables(rows, adjust)  # the p family, MDEs and clustering under the last one
            parts = [to_latex(table, "Before / after fine-tuning", statistics_notes(rows, adjust) if i == len(tables) - 1
                              else ()) for i, table in enumerate(tables)]
            if classes := per_class_table(store, rows):
                parts.append(to_latex(classes, PER_CLASS_TITLE))
            parts.append(to_latex(leaderboard_table(entries, adjust), "Leaderboard"))
            if judged:
                parts.append(to_latex(judged[0], "LLM judge", judged[1]))
            if plan:
                parts.append(_sweep_text(plan, results, "latex", adjust))
            text = "% bench report: needs \\usepackage{booktabs}\n" + "\n".join(parts)
        else:
            parts = ["## Before / after fine-tuning\n\n" + markdown_table(rows, table_notes(store, rows), adjust),
                     "## Leaderboard\n\n" + leaderboard_markdown(entries, adjust)]
            if classes := per_class_table(store, rows):
                parts.insert(1, f"## {PER_CLASS_TITLE}\n\n" + to_markdown(classes))
            if judged:
                parts.append("## LLM judge\n\n" + judge_markdown(*judged))
            if plan:
                parts.insert(0, f"## Sweep {plan.name}\n\n" + _sweep_text(plan, results, "md", adjust))
            text = "\n".join(parts)
        _emit(text, out)
    finally:
        store.close()
    return 0


def _sweep_text(plan: Any, results: Any, fmt: str, adjust: str = "holm") -> str:
    from harness.report.tables import OVER_SEEDS_TITLE, to_latex
    from harness.commands.sweep import over_seeds_table, sweep_csv, sweep_markdown, sweep_table

    if fmt == "csv":
        return sweep_csv(plan, results)
    table, pooled = sweep_table(plan, results, adjust), over_seeds_table(plan, results)
    if fmt != "latex":
        return sweep_markdown(table, pooled, adjust)
    text = to_latex(table, f"Sweep {plan.name}")
    return text if pooled is None else text + "\n" + to_latex(pooled, f"Sweep {plan.name}: {OVER_SEEDS_TITLE}")


def _html_report(store: Any, args: argparse.Namespace, runs: list[Any], rows: list[Any], plan: Any,
                 results: Any) -> tuple[str, Path]:
    """The page, and where it goes by default: results/reports/ + the sweep's name, the single
    run's id, or report__<task>__<hash of the run ids>."""
    import hashlib

    from harness.task.data import data_dir_from
    from harness.report.html import build_report, render
    from harness.commands.sweep import sweep_section

    data_dir = data_dir_from(args.data_dir)
    ids = sorted({row.run_id for row in rows})
    if plan:
        title, name, sweep = f"bench sweep {plan.name}", plan.name, sweep_section(plan, results)
    elif len(ids) == 1:
        title, name, sweep = f"bench run {ids[0]}", ids[0], None
    else:
        digest = hashlib.sha256("|".join(ids).encode()).hexdigest()[:8]
        title, sweep = f"bench report: {args.task or 'all tasks'}", None
        name = f"report__{args.task or 'all'}__{digest}"
    text = render(build_report(store, runs, rows, data_dir, title, sweep, args.adjust))
    return text, store.root / "reports" / f"{name}.html"


def output_path(option: str, value: str) -> Path:
    """A path the user asked bench to write to, refused when it climbs out with '..'."""
    if ".." in Path(value).parts:
        raise BenchError(f"{option} {value}: '..' components are not allowed; give the path without them")
    return Path(value)


def _emit(text: str, out: str | None) -> None:
    """Print, or write to `out` and print its path."""
    from harness.store import atomic_write

    if out is None:
        print(text, end="")
        return
    atomic_write(output_path("--out", out), text)
    print(out)


def cmd_export(args: argparse.Namespace) -> int:
    """Leaderboard, the before/after rows and (when stored) the judge table, each as CSV and markdown;
    classification runs' per-class scores as CSV."""
    from harness.commands.judge import judge_csv, judge_markdown, judge_notes, judge_table, stored_judgments
    from harness.report.leaderboard import leaderboard, leaderboard_csv, leaderboard_markdown
    from harness.compare.paired import Comparison
    from harness.report.tables import csv_table, data_notes, markdown_table, per_class_csv, table_notes
    from harness.store import atomic_write

    target = output_path("--to", args.to)
    if target.exists() and not target.is_dir():
        raise BenchError(f"--to {args.to} exists and is not a folder")
    store = _open_store(args.results)
    try:
        _, rows = _selected(store, args)
        entries = leaderboard(store, rows)
        files = {"leaderboard.csv": leaderboard_csv(entries),
                 "leaderboard.md": "# Leaderboard\n\n" + leaderboard_markdown(entries),
                 "comparisons.csv": csv_table(rows, data_notes(store, rows)),
                 "comparisons.md": "# Before / after fine-tuning\n\n" + markdown_table(rows, table_notes(store, rows))}
        if any(isinstance(row, Comparison) for row in rows):
            files["per_class.csv"] = per_class_csv(store, rows)
        judgments = stored_judgments(store, [row.run_id for row in rows])
        if judgments:
            files["judge.md"] = "# LLM judge\n\n" + judge_markdown(judge_table(judgments), judge_notes(judgments))
            files["judge.csv"] = judge_csv(judgments)
        for name, text in files.items():
            atomic_write(target / name, text)
            print(target / name)
    finally:
        store.close()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.task.data import data_dir_from
    from harness.loggers import check_loggers
    from harness.run.resume import settle_stored_runs
    from harness.store import Store, results_dir
    from harness.task.registry import task_option_type
    from harness.task.registry import task_options as declared_options
    from harness.commands.sweep import metric_label, parse_grid, plan_sweep, prepare_runners, save_plan, write_outputs
    from harness.run.launchers import launch

    started = time.perf_counter()
    loggers = check_loggers(args.log_to)
    check_launcher(args)
    overrides = _overrides(args)
    options = task_options(args)
    own = {name: parameter for name, parameter in declared_options(args.task).items() if name not in TASK_OPTIONS}
    axes = parse_grid(args.grid, {**grid_types(), **{name: task_option_type(p) for name, p in own.items()}},
                      {**overrides, **options, "models": args.models}, plugin_options=list(own))
    plan, planned = plan_sweep(args.task, axes, models=list(args.models or ()), overrides=overrides,
                               task_options=options, preset=args.preset, metric=args.metric)
    data_dir = data_dir_from(args.data_dir)
    store = Store(results_dir(args.results))
    try:
        _log(f"sweep {plan.name}: {len(planned)} cells")
        runners = prepare_runners(planned, store, data_dir, _log)
        settle_stored_runs(store, [(item.run.run_id, item.run.config.to_dict(),
                                    runners[item.spec.key].splits(item.run.config)) for item in planned],
                           force_new=args.force_new, log=_log)
        write_run_files(store, [item.run for item in planned])
        save_plan(store.root, plan)  # before the first cell: an interrupted sweep can still be reported
        results = launch(args, plan, planned, runners, store, _log, _after_run(loggers, store))
        if results is None:  # --no-wait: the cells run on as jobs; `bench report --sweep` collects them
            return 0
        plan = dataclasses.replace(plan, failures={r.cell.run_id: r.error for r in results if r.error})
        save_plan(store.root, plan)  # with the failed cells' reasons, for later reports
        table, section, html = write_outputs(store, plan, results, data_dir)
        print(f"\n## {plan.name}: {metric_label(results, plan.metric)} per cell\n\n{table}")
        if section.heatmap_png:
            print(section.heatmap_caption + "\n")
        if html is not None:
            print(f"report: {html}")
        folder = store.root / "sweeps"
        heatmap = f"heatmap: {folder / plan.name}.png   " if section.heatmap_png else ""
        print(f"tables: {folder / plan.name}.md and .csv   {heatmap}wall time {time.perf_counter() - started:.1f} s")
    finally:
        store.close()
    failed = [result for result in results if result.error]
    if failed:
        print(f"{len(failed)} of {len(results)} cells failed: " + "; ".join(f"{r.cell.label}: {r.error}"
                                                                          for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
