"""A Hugging Face model card (`README.md`) in every checkpoint folder: what the base model was, what
it was trained on and how, and its before/after metrics with their 95% CIs in a `model-index`.

Written when a run has its fine-tuned evaluation and comparison (the run's last step), and again
whenever the run is re-run, so an interrupted run gets its card on resume. Built with
huggingface_hub's ModelCard/ModelCardData/EvalResult, so the YAML header is the hub's own format.
"""
from __future__ import annotations

import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.backends.aliases import ALIASES
from harness.backends.models import _looks_local
from harness.compare.paired import compare, format_ci, format_p
from harness.faults import reached
from harness.backends.checkpoint import checkpoint_meta
from harness.store import atomic_write
from harness.task.registry import spec_for

CARD_FILE = "README.md"
CARD_KEY = "bench"  # the card metadata's own section: bench version, run id, command, training settings
# The run's training settings shown in the card, in this order (those set in its config).
TRAINING_SETTINGS = ("method", "objective", "lr", "epochs", "batch_size", "grad_accum", "optimizer", "schedule",
                     "warmup_ratio", "weight_decay", "max_grad_norm", "max_length", "train_samples",
                     "validation_samples", "eval_samples", "patience", "early_stop_metric", "seed", "train_seed",
                     "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "precision")
# Config keys that are `bench run` flags of the same name (besides the task options and the model).
RUN_FLAGS = ("preset", "method", "objective", "shots", "train_samples", "eval_samples", "validation_samples",
             "epochs", "lr", "batch_size", "eval_batch_size", "grad_accum", "max_length", "optimizer", "schedule",
             "warmup_ratio", "max_grad_norm", "weight_decay", "evals_per_epoch", "patience", "early_stop_metric",
             "seed", "train_seed", "lora_rank", "lora_alpha", "lora_dropout", "chat_template", "max_new_tokens",
             "precision")


def bench_version() -> str:
    try:
        return version("bench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def hub_base_model(meta: Mapping[str, Any]) -> str | None:
    """The base model as a hub id: an alias's hub id, or the hub id the run was given. A local folder
    has none (the hub refuses a path as base_model); the card's text names the folder instead."""
    name = str(meta["model"])
    if name in ALIASES:
        return ALIASES[name].hub_id
    return None if _looks_local(name) else name


def run_command(config: Mapping[str, Any], data_dir: Path | None, results: Path) -> str:
    """The `bench run` command that reproduces this run (the same config, so the same run id): every
    setting spelled out, so it does not depend on the defaults of a later bench version."""
    words = ["bench", "run", spec_for(dict(config)).name]
    for name, value in config.get("task_options") or ():
        words += [f"--{name.replace('_', '-')}", str(value)]
    words += ["--models", str(config["model"])]
    baselines = config.get("baselines")
    if baselines:
        words += ["--baseline", ",".join(baselines)]
    for name in RUN_FLAGS:
        value = config.get(name)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    if config.get("lora_targets"):
        words += ["--lora-targets", ",".join(config["lora_targets"])]
    for flag in ("compile", "trust_remote_code"):
        if config.get(flag):
            words.append(f"--{flag.replace('_', '-')}")
    if data_dir is not None:
        words += ["--data-dir", str(data_dir)]
    words += ["--results", str(results)]
    return shlex.join(words)


def _task_type(kind_name: str) -> str:
    return {"Classify": "text-classification", "ExtractiveQA": "question-answering"}.get(kind_name, "text-generation")


def _headline(row: Any) -> tuple[tuple[float, Sequence[float]], tuple[float, Sequence[float]]]:
    """((before, its CI), (after, its CI)) of a classification or a text comparison."""
    if hasattr(row, "accuracy_before_ci"):
        return (row.accuracy_before, row.accuracy_before_ci), (row.accuracy_after, row.accuracy_after_ci)
    return (row.before, row.before_ci), (row.after, row.after_ci)


def eval_results(spec: Any, meta: Mapping[str, Any], rows: Sequence[Any], split: str | None) -> list[Any]:
    """One model-index entry per number: the fine-tuned and baseline headline (with its 95% CI)
    and the paired delta (CI, p-value) for each baseline the run compared against."""
    from huggingface_hub import EvalResult

    data = getattr(spec, "data", None)
    common = dict(task_type=_task_type(str(meta.get("kind"))), dataset_type=getattr(data, "hub_id", spec.key),
                  dataset_name=spec.name, dataset_config=getattr(data, "config", None), dataset_split=split)
    results = []
    for row in rows:
        (before, before_ci), (after, after_ci) = _headline(row)
        metric = row.headline
        entries = ((metric, f"{metric} (fine-tuned)", after, {"ci95": list(after_ci)}),
                   (metric, f"{metric} (before fine-tuning: {row.baseline} baseline)", before,
                    {"ci95": list(before_ci)}),
                   (f"delta_{row.delta_name}", f"delta {row.delta_name} (fine-tuned minus {row.baseline} baseline, "
                    "paired)", row.headline_delta, {"ci95": list(row.delta_ci), "p_value": row.p_value}))
        for metric_type, name, value, args in entries:
            results.append(EvalResult(**common, metric_type=metric_type, metric_name=name,
                                      metric_value=round(float(value), 6),
                                      metric_args={key: _rounded(v) for key, v in args.items()}))
    return results


def _rounded(value: Any) -> Any:
    return [round(float(v), 6) for v in value] if isinstance(value, list) else round(float(value), 6)


def build_card(spec: Any, meta: Mapping[str, Any], config: Mapping[str, Any], rows: Sequence[Any],
               command: str, run_id: str) -> Any:
    from huggingface_hub import ModelCard, ModelCardData

    base = hub_base_model(meta)
    data = getattr(spec, "data", None)
    settings = {name: config[name] for name in TRAINING_SETTINGS if config.get(name) is not None}
    if isinstance(settings.get("lora_targets"), tuple):
        settings["lora_targets"] = list(settings["lora_targets"])
    if not str(config.get("method", "")).startswith(("lora", "qlora")):
        settings = {k: v for k, v in settings.items() if not k.startswith("lora_")}
    card_data = ModelCardData(
        base_model=base, library_name="peft" if meta.get("adapter") else "transformers",
        datasets=[data.hub_id] if getattr(data, "hub_id", None) else None,
        tags=["bench", spec.key, str(meta.get("method")), f"objective-{meta.get('objective')}",
              _task_type(str(meta.get("kind")))],
        pipeline_tag=_task_type(str(meta.get("kind"))) if meta.get("objective") == "head" else None,
        model_name=run_id, eval_results=eval_results(spec, meta, rows, getattr(data, "eval", None)) or None,
        **{CARD_KEY: {"version": bench_version(), "run_id": run_id, "task": spec.key, "command": command,
               "training": settings}})
    header = card_data.to_yaml()
    body = _body(spec, meta, rows, settings, command, base)
    return ModelCard(f"---\n{header}\n---\n{body}")


def _body(spec: Any, meta: Mapping[str, Any], rows: Sequence[Any], settings: Mapping[str, Any], command: str,
          base: str | None) -> str:
    where = f"[{base}](https://huggingface.co/{base})" if base else f"the local model `{meta.get('base_source')}`"
    kind = "A LoRA adapter" if meta.get("adapter") else "The full weights"
    lines = [f"# {meta['model']} fine-tuned on {spec.name}", "",
             f"{kind} of {where}, fine-tuned with [bench](https://pypi.org/project/bench/) "
             f"{bench_version()} on task `{spec.key}` ({(spec.description or spec.name).rstrip('.')}); objective "
             f"`{meta.get('objective')}`.", "", "## Results", "",
             "Same eval examples before and after; 95% CIs; the delta's CI by paired bootstrap.", "",
             "| baseline | n | before | after | delta | p |", "|---|---|---|---|---|---|"]
    for row in rows:
        (before, before_ci), (after, after_ci) = _headline(row)
        lines.append(f"| {row.baseline} | {row.n} | {row.headline} {format_ci(before, before_ci)} | "
                     f"{format_ci(after, after_ci)} | {format_ci(row.headline_delta, row.delta_ci, signed=True)} | "
                     f"{format_p(row.p_value)} |")
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    lines += ["", "## Reproduce", "", "```", command, "```", "",
              "`bench_checkpoint.json` beside this card records the prompt, the label verbalizers and the full "
              "run configuration.", ""]
    return "\n".join(lines)


def is_bench_card(path: Path) -> bool:
    """A card this module wrote (peft's save_pretrained leaves a placeholder README.md first)."""
    from huggingface_hub import ModelCard

    if not path.is_file():
        return False
    try:
        return isinstance(ModelCard.load(path).data.get(CARD_KEY), dict)
    except Exception:  # unreadable YAML: not ours
        return False


def write_run_card(spec: Any, run_id: str, config: Mapping[str, Any], records: Mapping[str, Any], store: Any,
                   data_dir: Path | None) -> Path | None:
    """(Re)write the card of a run whose fine-tuned evaluation is stored; None when the run has no
    checkpoint folder (e.g. deleted after the run) or no comparison."""
    checkpoint = store.run_dir(run_id) / "checkpoint"
    meta = checkpoint_meta(checkpoint)
    if meta is None or "finetuned" not in records:
        return None
    reached("model-card", 1)  # every stage stored, the card not yet written
    rows = compare(store, run_id, dict(config), dict(records))
    card = build_card(spec, meta, config, rows, run_command(config, data_dir, store.root), run_id)
    path = checkpoint / CARD_FILE
    atomic_write(path, str(card))
    return path
