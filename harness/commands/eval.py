"""`bench eval TASK --model PATH`: metrics of one model or bench checkpoint, stored as a run.

A bench checkpoint is evaluated the way its run evaluated it: the run's sample sizes, seed, shots
and lengths are the defaults (explicit options still win), so the numbers match the run's
fine-tuned stage; an eval set that shares examples with the checkpoint's training data is named
in a warning and in the record's notes.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.artefacts import read_json
from harness.backends.checkpoint import (CHECKPOINT_FILE, RETRAIN, base_source, check_checkpoint, checkpoint_meta,
                                         checkpoint_problem, load_checkpoint)
from harness.backends.models import ModelRef, resolve_model
from harness.commands.common import add_run_flags, add_task_arguments, log, overrides, task_options
from harness.errors import BenchError
from harness.options import TASK_OPTIONS, RunConfig
from harness.resolve import resolve
from harness.run.checks import check_position_limit
from harness.run.transfer import plan_transfer, source_view, to_target
from harness.task.registry import get_task, spec_for

if TYPE_CHECKING:
    from harness.task.spec import TaskSpec

# Imports inside functions are the engine's (the store, the runner and stages, the data loader):
# sqlite3, pandas, numpy and torch stay out of `bench --help`, which imports this module.

# Settings that decide which examples are evaluated and how they are prompted.
EVAL_SETTINGS = ("train_samples", "validation_samples", "eval_samples", "seed", "shots", "max_length",
                 "chat_template", "max_new_tokens")
NAME = "eval"


def add_parser(commands: Any) -> None:
    evaluate = commands.add_parser(NAME, help="evaluate a model or a bench checkpoint on a task")
    add_task_arguments(evaluate)
    add_run_flags(evaluate, "serving")
    evaluate.add_argument("--model", "--models", required=True, help="bench checkpoint folder (evaluated with its "
                          "run's sample sizes, seed, shots and lengths unless given), alias, hub id or local folder")
    evaluate.add_argument("--label-map", help="a checkpoint of another classification task: its labels as this "
                          "task's, SOURCE=TARGET,... (not needed when both have the same labels)")
    evaluate.set_defaults(preset=None)  # a checkpoint's run preset, else quick


def run(args: argparse.Namespace) -> int:
    return evaluate_command(args, overrides(args))


def evaluate_command(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from harness.distributed import require_one_process

    require_one_process(NAME)
    from harness.task.data import data_dir_from
    from harness.run.runner import quiet_transformers

    spec = get_task(args.task, **task_options(args))
    data_dir = data_dir_from(args.data_dir)
    path, meta, run_config = checked_checkpoint(args)
    transfer = check_transfer(args, spec, path, meta, run_config)
    ref = resolve_model(base_source(meta) if meta else args.model, trust_remote_code=args.trust_remote_code)
    inherited = {key: run_config[key] for key in EVAL_SETTINGS if key in (run_config or {})}
    explicit = {key: value for key, value in overrides.items() if value is not None}
    preset = args.preset or (run_config or {}).get("preset") or "quick"
    config = resolve(spec, args.model, {**inherited, **explicit, **({"objective": meta["objective"]} if meta else {})},
                     preset, can_prompt=ref.can_prompt)
    if transfer is not None and config.objective == "lm" and config.shots and transfer.targets != tuple(
            range(len(transfer.targets))):
        raise BenchError(f"--shots {config.shots} with --label-map: the demonstrations' {spec.key} labels have no "
                         f"{transfer.source_task} verbalizer to show; add --shots 0")
    chosen = config.baselines[0] if config.baselines else "auto"
    baseline = spec.kind.default_baseline(ref.can_prompt) if chosen == "auto" else chosen
    check_inputs(spec, ref, config, None if meta is not None else baseline)
    check_serving(ref, config, meta, baseline)
    quiet_transformers()
    record = store_evaluation(args, spec, ref, config, data_dir, Evaluated(path, meta, run_config, transfer, baseline))
    print_evaluation(args, spec, record, meta, transfer)
    return 0


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """What is evaluated: the model folder and, for a bench checkpoint, its record, its run's
    config and the transfer to another task (None when on its own task); the baseline otherwise."""

    path: Path
    meta: dict[str, Any] | None
    run_config: dict[str, Any] | None
    transfer: Any
    baseline: str


def checked_checkpoint(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """--model's folder, its checkpoint record (None: not a bench checkpoint) and its run's config,
    checked before the store opens or any weights are read."""
    path = checkpoint_folder(args.model)
    if str(path) != args.model:
        args.model = str(path)
        print(f"info: {path.parent} is a run folder; evaluating its checkpoint {path}", file=sys.stderr)
    run_checkpoint = path.name == "checkpoint" and (path.parent / "config.json").is_file()
    meta = checkpoint_meta(path)  # a damaged record raises here, before anything is loaded or stored
    if meta is not None:  # before the store opens (`load_checkpoint` checks again when it loads), and
        check_checkpoint(path, meta, args.trust_remote_code)  # before its files are read as weights
    problem = checkpoint_problem(path) if meta is not None or run_checkpoint else None
    if problem is not None:  # deleted, or a weights file cut short
        raise BenchError(f"{problem}: {RETRAIN}")
    return path, meta, checkpoint_run_config(path, meta) if meta is not None else None


def store_evaluation(args: argparse.Namespace, spec: TaskSpec, ref: ModelRef, config: RunConfig, data_dir: Any,
                     evaluated: Evaluated) -> Any:
    """Evaluate (or find stored) and store the `eval` stage under the run's lock; its record."""
    from harness.run.resume import settle_stored_runs
    from harness.run.runner import Runner
    from harness.store import Store, results_dir

    meta, run_config, transfer = evaluated.meta, evaluated.run_config, evaluated.transfer
    store = Store(results_dir(args.results))
    try:
        runner = Runner(spec, store, data_dir, log)
        splits = runner.splits(config)
        if run_config is not None and transfer is None:  # another task's data: its ids mean other rows
            seen = trained_on(runner, run_config, splits.eval)
            if seen:
                note = (f"{seen} of the {len(splits.eval)} eval examples were in this checkpoint's training or "
                        "validation data: the score is optimistic; leave --eval-samples and --seed at the run's values")
                print(f"warning: {note}", file=sys.stderr)
                splits = dataclasses.replace(splits, notes=(*splits.notes, note))
        run_id = f"eval__{spec.key}__{config.digest()}" + (
            f"__from-{transfer.source_task}-{transfer.digest}" if transfer else "")
        # its stored config keeps the checkpoint's training settings: checked by its data files only
        settle_stored_runs(store, [(run_id, None, splits)], force_new=args.force_new, log=runner.log)
        with store.run_lock(run_id, runner.log):
            # A checkpoint's record keeps the settings it was trained with (its lr, method, ...), not
            # this command's defaults for them; the evaluation's own settings are this command's.
            trained = {**(run_config or {}), "checkpoint": str(evaluated.path)} if meta is not None else {}
            evaluated_settings = {key: value for key, value in config.to_dict().items() if key not in trained or
                                  key in (*EVAL_SETTINGS, "eval_batch_size", "precision", "task", "model")}
            return runner.stage(run_id, "eval", config, splits,
                                lambda: evaluation_work(args, spec, ref, config, splits, evaluated),
                                stored_config={**trained, **evaluated_settings, "method": "eval",
                                               **({"transfer": transfer.record()} if transfer else {})})
    finally:
        store.close()


def evaluation_work(args: argparse.Namespace, spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Any,
                    evaluated: Evaluated) -> Any:
    """The stage's work: load the checkpoint and predict (mapped to this task's labels when it is
    another task's), or evaluate the model as a run's baseline."""
    from harness.run import vllm_stages
    from harness.run.stages import evaluate_baseline, evaluate_model

    if evaluated.meta is None:
        return evaluate_baseline(spec, ref, config, evaluated.baseline, splits)
    if vllm_stages.served_by_vllm(config, config.objective):
        # vLLM serves the checkpoint's folder (or its LoRA adapter on the base model); no HF model loaded
        def predict(view: TaskSpec) -> Any:
            return vllm_stages.evaluate_checkpoint(view, ref, config, evaluated.path, splits)
    else:
        model, tokenizer, _ = load_checkpoint(evaluated.path, trust_remote_code=args.trust_remote_code)

        def predict(view: TaskSpec) -> Any:
            return evaluate_model(view, ref, config, model, tokenizer, splits)
    return predict(spec) if evaluated.transfer is None else transfer_evaluation(spec, predict, evaluated.transfer)


def print_evaluation(args: argparse.Namespace, spec: TaskSpec, record: Any, meta: dict[str, Any] | None,
                     transfer: Any) -> None:
    """One line: task, model, mode, n, failures, headline with its CI, time."""
    metrics, headline = record.metrics, record.metrics["headline"]
    value = metrics[headline]
    extra = f" | macro-F1 {metrics['f1_macro']['value']:.4f}" if "f1_macro" in metrics else ""
    mode = (f"{transfer.describe()}, " if transfer else "") + ("fine-tuned checkpoint, " if meta is not None else "") + record.info["mode"] + (
        f" {record.info.get('shots', 0)}-shot" if record.info["mode"] == "prompt" else "")
    print(f"{spec.key} | {args.model} | {mode} | n {record.info.get('examples', '?')} | failures "
          f"{metrics.get('failures', 0)} | {headline} {value['value']:.4f} [{value['ci'][0]:.4f}, {value['ci'][1]:.4f}]"
          f"{extra} | {record.seconds:.1f} s")


def check_inputs(spec: TaskSpec, ref: ModelRef, config: RunConfig, baseline: str | None) -> None:
    """What evaluating would find out only after the store was opened and the model loaded, checked
    before either: a model's own evaluation as a run's `baseline` is, a checkpoint's (baseline None)
    as its run was, for the settings this command may change (lengths, the span task's windows)."""
    if baseline is not None:
        if baseline == "prompt" and not ref.can_prompt:
            raise BenchError(f"--baseline prompt needs a language-model head; {ref.name} is an encoder: use "
                             "--baseline head")
        spec.kind.check(spec, ref, config, (baseline,))
    elif not spec.kind.discrete:  # a classifier checkpoint's inherited --shots were checked with its run
        spec.kind.check(spec, ref, config, ())
    check_position_limit(spec, ref, config)


def check_serving(ref: ModelRef, config: RunConfig, meta: dict[str, Any] | None, baseline: str) -> None:
    """--backend vllm checked as a run's would be: a checkpoint as the run that trained it (its
    method and objective), a model as that run's `baseline`."""
    from harness.run import vllm_stages

    if config.backend != "vllm":
        return
    if meta is None and baseline != "prompt":
        raise BenchError(f"--backend vllm serves prompt scoring and generation, not the {baseline} baseline "
                         f"{ref.name} gets here: add --baseline prompt, or use --backend hf")
    if meta is not None and meta["objective"] != "lm":
        raise BenchError(f"--backend vllm serves prompt scoring and generation; this checkpoint was trained with "
                         f"--objective {meta['objective']} (a head vLLM cannot run): use --backend hf")
    trained = config if meta is None else dataclasses.replace(config, method=meta["method"], objective="lm")
    vllm_stages.check_backend(ref, trained, ("prompt",) if meta is None else ())


def checkpoint_folder(model: str) -> Path:
    """--model as given, or a run folder's checkpoint/ when given the run folder (results/runs/<id>)."""
    path = Path(model)
    inside = path / "checkpoint"
    if path.is_dir() and not (path / CHECKPOINT_FILE).is_file() and (inside / CHECKPOINT_FILE).is_file():
        return inside
    if "," in model and not path.exists():
        raise BenchError(f"--model {model}: bench eval evaluates one model; run it once per model, or use "
                         "`bench run --models A,B` for before/after comparisons")
    return path


def check_transfer(args: argparse.Namespace, spec: Any, path: Path, meta: dict[str, Any] | None,
                   run_config: dict[str, Any] | None) -> Any:
    """None when the checkpoint is evaluated on its own task (or is no checkpoint); the transfer to
    this task when the labels carry over; else one error line."""

    label_map = getattr(args, "label_map", None)
    if meta is None or meta["task"] == spec.key:
        if label_map is not None:
            raise BenchError("--label-map applies to a bench checkpoint evaluated on another task than it was "
                             f"trained on; {'this is its own task' if meta else f'{path} is no bench checkpoint'}: "
                             "drop --label-map")
        return None
    refusal = (f"checkpoint {path} was trained on task {meta['task']}, not {spec.key} (evaluate it on its own task "
               f"with `bench eval {task_command(meta['task'], run_config)} --model {path}`)")
    return plan_transfer(meta, spec, label_map, refusal)


def transfer_evaluation(spec: Any, predict: Callable[[Any], Any], transfer: Any) -> Any:
    """The checkpoint predicts the target task's examples over its own labels (`predict` of the
    source view of `spec`); the predictions are then mapped to the target's labels and scored as
    the target's."""
    predictions, metrics, info, curves = predict(source_view(spec, transfer))
    return to_target(predictions, transfer, info["mode"]), metrics, {**info, "transfer": transfer.record()}, curves


def checkpoint_run_config(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved configuration of the run that trained the checkpoint: saved with it, or (for
    checkpoints saved before that) the run folder's config.json beside it."""
    if isinstance(meta.get("config"), dict):
        return meta["config"]
    beside = path.parent / "config.json"
    if beside.is_file():
        config = read_json(beside, "restore it from a copy, or evaluate the checkpoint with explicit --eval-samples, "
                                   "--seed and lengths after deleting it")
        if isinstance(config, dict) and config.get("task") == meta.get("task"):
            return config
    return None


def task_command(task_key: str, run_config: dict[str, Any] | None) -> str:
    """`goemotions --labels 8` for the key goemotions-8labels: what `bench eval` takes."""

    if run_config is None:
        return task_key

    options = " ".join(f"--{name.replace('_', '-')} {value}" if name in TASK_OPTIONS else f"--task-option {name}={value}"
                       for name, value in run_config.get("task_options") or ())
    return f"{spec_for(run_config).name} {options}".strip()


def trained_on(runner: Any, run_config: dict[str, Any], eval_examples: Any) -> int:
    """How many eval examples the checkpoint's run trained or early-stopped on (its splits rebuilt)."""
    from harness.task.data import run_splits

    run = run_splits(runner.spec, run_config, runner.data_dir)
    seen = {e.id for e in run.train} | {e.id for e in run.validation}
    return sum(e.id in seen for e in eval_examples)
