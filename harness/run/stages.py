"""The work inside each stage: load what it needs, put the model behind a backend, ask the task's
kind to predict (or to build training items), describe what it did.

Each function returns (predictions, metrics, info, curves) or the fine-tuned model; the
pipeline owns skipping, timing and storing.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.backends.batch_size import start_batch_size
from harness.backends.checkpoint import save_checkpoint
from harness.backends.base import Backend
from harness.backends.data_parallel import DataParallel, fsdp_sharded
from harness.backends.hf import HFBackend
from harness.backends.models import (
    ModelRef,
    load_classifier,
    load_lm,
    load_span_model,
    load_tokenizer,
    parameter_counts,
)
from harness.backends.precision import device, resolved_precision
from harness.errors import BenchError
from harness.options import RunConfig
from harness.run import vllm_stages
from harness.task.spec import TaskSpec
from harness.train.accounting import flops_accounting
from harness.distributed import SINGLE_PROCESS, Launcher
from harness.train.data_parallel import full_weights
from harness.train.loop import TrainResult, train
from harness.train.methods import apply_method, gradient_checkpointing_wanted
from harness.train.validate import validation_loss
from harness.types import Example, Splits, StageOutput, TrainItem

TRAIN_STATE = "train_state"  # beside the checkpoint: the resumable mid-training state


def evaluate_baseline(spec: TaskSpec, ref: ModelRef, config: RunConfig, baseline: str, splits: Splits,
                      launcher: Launcher = SINGLE_PROCESS) -> StageOutput:
    """Zero/few-shot prompt scoring, or the untrained-head baseline (same init as fine-tuning)."""
    if baseline == "prompt" and vllm_stages.served_by_vllm(config, "lm"):
        return vllm_stages.evaluate_prompt_baseline(spec, ref, config, splits, launcher)
    tokenizer = load_tokenizer(ref)
    if baseline == "prompt":
        model = load_lm(ref).to(device())
    else:
        model = _load_head_model(spec, ref, config, tokenizer).to(device())
    objective = "lm" if baseline == "prompt" else "head"
    return _evaluate(spec, ref, config, model, tokenizer, splits, objective, launcher)


def _load_head_model(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                     quantize_4bit: bool = False) -> Any:
    """A new, seeded head: the kind's span start/end head, or a classification head over its labels."""
    if spec.kind.head == "span":
        return load_span_model(ref, seed=config.training_seed, quantize_4bit=quantize_4bit)
    labels = spec.kind.labels  # type: ignore[attr-defined]  # a classifier head is over the kind's labels
    return load_classifier(ref, labels, tokenizer.pad_token_id, seed=config.training_seed, quantize_4bit=quantize_4bit)


def evaluate_model(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any,
                   splits: Splits, launcher: Launcher = SINGLE_PROCESS) -> StageOutput:
    return _evaluate(spec, ref, config, model, tokenizer, splits, config.objective, launcher)


def backend_for(ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any, batch_size: int,
                launcher: Launcher = SINGLE_PROCESS) -> Backend:
    """The loaded model behind the backend contract the kinds call; over several processes each
    rank answers its shard of every request list (a model FSDP shards runs every request on every
    rank instead: its forward is a collective all ranks must make together)."""
    backend = HFBackend(model, tokenizer, ref.family == "seq2seq", batch_size, config.precision, device())
    if launcher.distributed and not fsdp_sharded(model):
        return DataParallel(backend, launcher)
    return backend


def _evaluate(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any, splits: Splits,
              objective: str, launcher: Launcher = SINGLE_PROCESS) -> StageOutput:
    started = time.perf_counter()
    # Start from the requested size capped by a memory estimate; the backend halves it on out-of-memory.
    batch = start_batch_size(model, config.eval_batch_size, config.max_length + (config.max_new_tokens or 0), device())
    backend = backend_for(ref, config, model, tokenizer, batch, launcher)
    predictions = spec.kind.predict(spec, backend, splits.eval, splits.demos_from, config, objective)
    seconds = time.perf_counter() - started
    info = {"mode": "prompt" if objective == "lm" else "head", "shots": spec.kind.shots(config, objective),
            "eval_batch_size": backend.batch_size, "eval_batch_requested": config.eval_batch_size,
            "precision": resolved_precision(config.precision, device()),
            "params": parameter_counts(model), "examples": len(predictions),
            "examples_per_second": round(len(predictions) / seconds, 2) if seconds else None}
    if config.backend != "hf":  # a head stage of a --backend vllm run: vLLM has no heads (vllm_stages)
        info["backend"] = "hf"
    return predictions, {}, info, []


def train_items(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                examples: tuple[Example, ...]) -> list[TrainItem]:
    """What fine-tuning learns from, as the task's kind builds it for `config.objective`."""
    return spec.kind.train_items(spec, tokenizer, ref.family == "seq2seq", config, examples)


def finetune(spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Splits, checkpoint: Path,
             log: Any, launcher: Launcher = SINGLE_PROCESS) -> tuple[Any, Any, TrainResult, dict[str, Any]]:
    import torch

    # Seed before anything random is built (heads, LoRA matrices): a resumed run that skipped the
    # baseline must initialise exactly like an uninterrupted one.
    torch.manual_seed(config.training_seed)
    tokenizer = load_tokenizer(ref)
    quantize = config.method_name == "qlora"
    model = _load_trainable(spec, ref, config, tokenizer, quantize)
    if config.objective == "head":
        task_type = "QUESTION_ANS" if spec.kind.head == "span" else "SEQ_CLS"
    else:
        task_type = "SEQ_2_SEQ_LM" if ref.family == "seq2seq" else "CAUSAL_LM"
    if not quantize:
        model = model.to(device())
    checkpointing = gradient_checkpointing_wanted(model, config, spec.kind.validation_metrics == ("loss",))
    model = apply_method(model, config, task_type, checkpointing)
    items = train_items(spec, ref, config, tokenizer, splits.train)

    if spec.kind.validation_metrics == ("loss",):
        # Text tasks validate on held-out loss: generating for every validation example at every
        # evaluation would cost more than the training itself on a CPU.
        held_out = train_items(spec, ref, config, tokenizer, splits.validation)

        def validate(current: Any) -> dict[str, float]:
            return {"loss": validation_loss(current, held_out, tokenizer.pad_token_id, config.eval_batch_size,
                                            config.precision)}
    else:
        validate = _predicting_validator(spec, ref, config, tokenizer, splits, launcher)
    criterion = spec.kind.validation_metrics[0] if config.early_stop_metric == "auto" else config.early_stop_metric
    result = train(model, items, config, tokenizer.pad_token_id, validate, log,
                   state_dir=checkpoint.with_name(TRAIN_STATE), criterion=criterion, launcher=launcher)
    if config.fsdp:  # the checkpoint and the evaluation need the whole model, gathered from the shards
        model = full_weights(model, lambda: _load_trainable(spec, ref, config, tokenizer, False).to(device()), launcher)
    if launcher.is_main:  # one writer of the checkpoint
        save_checkpoint(model, tokenizer, checkpoint, spec, ref, config, prompt_record(spec, ref, config, tokenizer))
    launcher.barrier()  # no rank evaluates the checkpoint before it is whole
    params = parameter_counts(model)
    info = {"params": params, **flops_accounting(params["total"], result.train_tokens, result.train_seconds),
            "steps": result.steps, "epochs": round(result.epochs, 3),
            "train_examples": len(items), "train_tokens": result.train_tokens,
            "train_seconds": round(result.train_seconds, 2), "validation_seconds": round(result.validation_seconds, 2),
            "tokens_per_second": round(result.tokens_per_second, 1), "stopped_early": result.stopped_early,
            "oom_backoff_pieces": result.oom_chunks, "precision": resolved_precision(config.precision, device()),
            "gradient_checkpointing": checkpointing, "device": str(device()), "checkpoint": str(checkpoint)}
    return model, tokenizer, result, info


def _load_trainable(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any, quantize: bool) -> Any:
    """The model fine-tuning starts from: a new seeded head over the encoder, or the LM."""
    if config.objective == "head":
        return _load_head_model(spec, ref, config, tokenizer, quantize)
    return load_lm(ref, quantize_4bit=quantize)


def merged_for_inference(model: Any, config: RunConfig) -> Any:
    """LoRA folded into the weights (as `load_checkpoint` does): evaluation then runs at base speed.
    QLoRA adapters stay separate: merging into 4-bit weights would re-quantize them."""
    if config.method_name == "lora" and hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def _predicting_validator(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any, splits: Splits,
                          launcher: Launcher = SINGLE_PROCESS) -> Any:
    """Validation by the kind's own metrics on predictions for the validation split."""
    def validate(current: Any) -> dict[str, float]:
        backend = backend_for(ref, config, current, tokenizer, config.eval_batch_size, launcher)
        predictions = spec.kind.predict(spec, backend, splits.validation, splits.demos_from, config, config.objective)
        return spec.kind.validation_values(spec, predictions)

    return validate


def prompt_record(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any) -> dict[str, Any]:
    """How the model was prompted, for using an `--objective lm` checkpoint without bench: the
    task's str.format template over its fields (or the function that builds it), the label
    verbalizers scored after it, and whether generation prompts went through the chat template."""
    record: dict[str, Any] = {"prompt": spec.prompt, "prompt_fields": list(spec.kind.fields)}
    if spec.formatter is not None:  # e.g. alpaca: a template with an optional section
        record["prompt_builder"] = f"{spec.formatter.__module__}.{spec.formatter.__qualname__}"
    return {**record, **spec.kind.prompt_record(spec, tokenizer, config, ref.family == "seq2seq")}
