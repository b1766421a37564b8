"""Resolving a run's configuration: engine preset < the task's preset overrides < method defaults
(for lr, when the preset does not fix it) < explicit command-line values; then every value
validated, so a bad option is one error line before any work. The options themselves are
declared once, in harness/options.py.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Mapping

from harness.backends.precision import check_precision
from harness.errors import BenchError
from harness.options import (BACKENDS, BASELINES, CHAT_TEMPLATES, EARLY_STOP_METRICS, GRADIENT_CHECKPOINTING, INT64_MAX, LORA_HEAD_LR, MAX_EPOCHS, METHODS, METHOD_LR, OBJECTIVES, OPTIMIZERS, PRESETS, RunConfig, SCHEDULES)
from harness.task.spec import TaskSpec


def resolve(spec: TaskSpec, model: str, overrides: Mapping[str, Any], preset: str = "quick", *,
            can_prompt: bool = True) -> RunConfig:
    """Merge preset, task overrides, method defaults and explicit values, then validate.

    `can_prompt` (the model has an LM head) settles `--objective auto`: such models keep their LM
    head and learn the label verbalizer, so before and after are scored the same way; encoders,
    and `--method head`, train a new classification head.
    """
    if preset not in PRESETS:
        raise BenchError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    check_task_presets(spec)
    values: dict[str, Any] = dict(PRESETS[preset])
    values.update(spec.presets.get(preset, {}))
    explicit = {key: value for key, value in overrides.items() if value is not None}
    method = explicit.get("method", "lora")
    check_method(method)
    method_name = method.split(":")[0]
    objective = explicit.get("objective", "auto")
    if objective == "auto":
        objective = explicit["objective"] = spec.kind.default_objective(can_prompt, method_name)
    if "lr" not in values:
        lora_head = method_name in ("lora", "qlora") and objective == "head"
        values["lr"] = LORA_HEAD_LR if lora_head else METHOD_LR[method_name]
    values.update(explicit)
    # a folder given with and without its trailing "/" (shell completion adds one) is one run, not two
    values.update(task=spec.key, model=model.rstrip("/") or model, preset=preset)
    if values.get("train_seed") == values.get("seed", 0):  # the default spelled out: the same run, one id
        values["train_seed"] = None
    known = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{key: value for key, value in values.items() if key in known})
    validate(config)
    return config


def check_task_presets(spec: TaskSpec) -> None:
    """A task's preset overrides must name presets and run options that exist: a typo ("epoch")
    would otherwise be dropped without a word and the run go ahead on the defaults."""
    options = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("task", "model", "preset", "task_options")]
    for preset, values in spec.presets.items():
        for name, known, what in ((preset, list(PRESETS), "a preset"),
                                  *((key, options, f"a run option (in its {preset!r} preset)") for key in values)):
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                raise BenchError(f"task {spec.name}: {name!r} is not {what}"
                                 f"{f'; did you mean {close[0]!r}?' if close else ''} (known: {', '.join(known)})")


def check_method(method: str) -> None:
    name, _, count = method.partition(":")
    if name == "freeze":
        if not count.isdigit() or int(count) < 1:
            raise BenchError(f"--method {method!r}: use freeze:N with N >= 1 trainable last blocks, e.g. freeze:2")
    elif name not in {"full", "lora", "qlora", "head"} or count:
        raise BenchError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")


def validate(config: RunConfig) -> None:
    check_integer_range(config)
    positive = dict(lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                    eval_batch_size=config.eval_batch_size, grad_accum=config.grad_accum,
                    lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                    validation_samples=config.validation_samples, evals_per_epoch=config.evals_per_epoch,
                    max_grad_norm=config.max_grad_norm)
    for name, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            raise BenchError(f"--{name.replace('_', '-')} must be positive and finite (got {value})")
    if config.epochs > MAX_EPOCHS:
        raise BenchError(f"--epochs {config.epochs:g} is more than {MAX_EPOCHS:,} passes over the training data; "
                         f"use --epochs {MAX_EPOCHS} or fewer")
    for name in ("train_samples", "eval_samples", "patience"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if config.max_length < 16:
        raise BenchError(f"--max-length must be at least 16 tokens (got {config.max_length})")
    if config.shots < 0:
        raise BenchError(f"--shots must be 0 or more (got {config.shots})")
    if config.shots > config.max_length:  # each demonstration takes at least a token of the prompt
        raise BenchError(f"--shots {config.shots}: a prompt of --max-length {config.max_length} tokens cannot hold "
                         f"{config.shots} demonstrations; use fewer --shots or a larger --max-length")
    # numpy refuses negative seeds, torch.manual_seed ones of 2**64 and up; the bound keeps the recorded
    # seed a signed 64-bit integer, which every reader of a run's config (SQLite, JSON elsewhere) can hold
    for name in ("seed", "train_seed"):
        value = getattr(config, name)
        if value is not None and not 0 <= value < 2**63:
            raise BenchError(f"--{name.replace('_', '-')} must be an integer from 0 to 2**63 - 1 (got {value})")
    if not 0 <= config.warmup_ratio < 1:
        raise BenchError(f"--warmup-ratio must be in [0, 1) (got {config.warmup_ratio})")
    if not 0 <= config.lora_dropout < 1:
        raise BenchError(f"--lora-dropout must be in [0, 1) (got {config.lora_dropout})")
    if not 0 <= config.weight_decay < math.inf:
        raise BenchError(f"--weight-decay must be 0 or more (got {config.weight_decay})")
    choices = dict(objective=(config.objective, OBJECTIVES), optimizer=(config.optimizer, OPTIMIZERS),
                   schedule=(config.schedule, SCHEDULES),
                   gradient_checkpointing=(config.gradient_checkpointing, GRADIENT_CHECKPOINTING))
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise BenchError(f"unknown --{name.replace('_', '-')} {value!r}; choose one of: {', '.join(allowed)}")
    for baseline in config.baselines:
        if baseline not in BASELINES:
            raise BenchError(f"unknown baseline {baseline!r}; choose from: {', '.join(BASELINES)}")
    if config.early_stop_metric not in EARLY_STOP_METRICS:
        raise BenchError(f"--early-stop-metric must be one of: {', '.join(EARLY_STOP_METRICS)}")
    if config.chat_template not in CHAT_TEMPLATES:
        raise BenchError(f"--chat-template must be auto, on or off (got {config.chat_template!r})")
    check_precision(config.precision)
    check_backend_options(config)
    if config.max_new_tokens is not None and config.max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be at least 1 (got {config.max_new_tokens})")
    if config.lm_eval_limit is not None and config.lm_eval_limit < 1:
        raise BenchError(f"--lm-eval-limit must be at least 1 (got {config.lm_eval_limit})")
    if not config.lm_eval and (config.lm_eval_include is not None or config.lm_eval_limit is not None):
        option = "--lm-eval-include" if config.lm_eval_include is not None else "--lm-eval-limit"
        raise BenchError(f"{option} applies to the tasks of --lm-eval, and none are given: add --lm-eval TASKS "
                         "or drop it")


def check_backend_options(config: RunConfig) -> None:
    """--backend and --tensor-parallel on their own (what the model and devices allow: run/vllm_stages.py)."""
    if config.backend not in BACKENDS:
        raise BenchError(f"unknown --backend {config.backend!r}; choose one of: {', '.join(BACKENDS)}")
    if config.tensor_parallel < 1:
        raise BenchError(f"--tensor-parallel must be at least 1 (got {config.tensor_parallel})")
    if config.tensor_parallel > 1 and config.backend != "vllm":
        raise BenchError(f"--tensor-parallel {config.tensor_parallel} shards vLLM's engine: add --backend vllm, "
                         "or drop it")


def check_integer_range(config: RunConfig) -> None:
    """Every integer setting fits a signed 64-bit integer (the seeds have their own, narrower check)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in ("seed", "train_seed") or isinstance(value, bool) or not isinstance(value, int):
            continue
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            shown = str(value) if value.bit_length() <= 128 else f"(a {value.bit_length()}-bit integer)"
            raise BenchError(f"--{field.name.replace('_', '-')} {shown} is out of range: integer settings are "
                             "stored as signed 64-bit integers (at most 2**63 - 1)")
