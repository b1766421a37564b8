"""The work inside each stage: load what it needs, run it, describe what it did.

Each function returns (predictions, metrics, info, curves) or the fine-tuned model; the
pipeline owns skipping, timing and storing.
"""
from __future__ import annotations

import dataclasses

import math
import time
from pathlib import Path
from typing import Any

from harness.backends.checkpoint import save_checkpoint
from harness.backends.hf import encode_for_head
from harness.backends.batch_size import start_batch_size
from harness.options import RunConfig
from harness.errors import BenchError
from harness.run.evaluate import predict_with_head, predict_with_prompt
from harness.train.accounting import flops_accounting
from harness.train.launch import SINGLE_PROCESS, Launcher
from harness.train.loop import TrainResult, train
from harness.types import TrainItem
from harness.train.methods import apply_method
from harness.metrics.classification import classification_report
from harness.backends.models import (
    ModelRef,
    load_classifier,
    load_lm,
    load_span_model,
    load_tokenizer,
    parameter_counts,
)
from harness.backends.precision import autocast, device, resolved_precision
from harness.task.prompts import build_contexts, choose_shots, use_chat_template, verbalizer_ids
from harness.task.spec import Classify, ExtractiveQA, Generate, TaskSpec
from harness.run.text_stages import predict_text, text_train_items, validation_loss
from harness.types import Example, Prediction, Splits, StageOutput

TRAIN_STATE = "train_state"  # beside the checkpoint: the resumable mid-training state


def evaluate_baseline(spec: TaskSpec, ref: ModelRef, config: RunConfig, baseline: str, splits: Splits) -> StageOutput:
    """Zero/few-shot prompt scoring, or the untrained-head baseline (same init as fine-tuning)."""
    tokenizer = load_tokenizer(ref)
    if baseline == "prompt":
        model = load_lm(ref).to(device())
    else:
        model = _load_head_model(spec, ref, config, tokenizer).to(device())
    objective = "lm" if baseline == "prompt" else "head"
    return _evaluate(spec, ref, config, model, tokenizer, splits, objective)


def _load_head_model(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                     quantize_4bit: bool = False) -> Any:
    """A new, seeded head: span start/end for extractive QA, else classification."""
    if isinstance(spec.kind, ExtractiveQA):
        return load_span_model(ref, seed=config.training_seed, quantize_4bit=quantize_4bit)
    return load_classifier(ref, spec.kind.labels, tokenizer.pad_token_id, seed=config.training_seed,
                           quantize_4bit=quantize_4bit)


def evaluate_model(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any,
                   splits: Splits) -> StageOutput:
    return _evaluate(spec, ref, config, model, tokenizer, splits, config.objective)


def _evaluate(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any, splits: Splits,
              objective: str) -> StageOutput:
    import torch

    from harness.faults import reached

    started = time.perf_counter()
    # Start from the requested size capped by a memory estimate; halve on out-of-memory below.
    batch = start_batch_size(model, config.eval_batch_size, config.max_length + (config.max_new_tokens or 0), device())
    while True:  # out of device memory: halve the batch and redo the stage's predictions
        try:
            reached("eval-batch", batch)
            predictions = _predict(spec, ref, dataclasses.replace(config, eval_batch_size=batch), model, tokenizer,
                                   splits.eval, splits.demos_from, objective)
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise BenchError("out of memory evaluating one example at a time; lower --max-length") from None
            batch //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    seconds = time.perf_counter() - started
    shots = config.shots if objective == "lm" and spec.is_classification else 0
    info = {"mode": "prompt" if objective == "lm" else "head", "shots": shots, "eval_batch_size": batch,
            "eval_batch_requested": config.eval_batch_size,
            "precision": resolved_precision(config.precision, device()),
            "params": parameter_counts(model), "examples": len(predictions),
            "examples_per_second": round(len(predictions) / seconds, 2) if seconds else None}
    return predictions, {}, info, []


def _predict(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any,
             examples: tuple[Example, ...], demo_pool: tuple[Example, ...], objective: str) -> list[Prediction]:
    with autocast(config.precision, device()):
        if not spec.is_classification:
            return predict_text(spec, ref, config, model, tokenizer, examples)
        if objective == "lm":
            demos = choose_shots(demo_pool, config.shots, len(spec.kind.labels), config.seed)
            return predict_with_prompt(spec, ref, model, tokenizer, examples, demos, config.max_length,
                                       config.eval_batch_size)
        return predict_with_head(model, tokenizer, examples, config.max_length, config.eval_batch_size)


def train_items(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                examples: tuple[Example, ...]) -> list[TrainItem]:
    """Head objective: the text(s) and the class. LM objective: prompt + verbalizer, loss on the
    verbalizer tokens only (the prompt is masked with -100). Text tasks: see text_stages."""
    if not spec.is_classification:
        return text_train_items(spec, ref, config, tokenizer, examples)
    if config.objective == "head":
        encoded, segments = encode_for_head(tokenizer, examples, config.max_length)
        return [TrainItem(ids, label=e.label, token_type_ids=segments[i] if segments else None)
                for i, (ids, e) in enumerate(zip(encoded, examples))]
    seq2seq = ref.family == "seq2seq"
    contexts = build_contexts(spec, tokenizer, examples, [], config.max_length, strip_eos=not seq2seq)
    answers = verbalizer_ids(spec, tokenizer)
    if seq2seq:
        return [TrainItem(ctx, lm_labels=answers[e.label]) for ctx, e in zip(contexts, examples)]
    return [TrainItem(ctx + answers[e.label], lm_labels=[-100] * len(ctx) + answers[e.label])
            for ctx, e in zip(contexts, examples)]


def finetune(spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Splits, checkpoint: Path,
             log: Any, launcher: Launcher = SINGLE_PROCESS) -> tuple[Any, Any, TrainResult, dict[str, Any]]:
    import torch

    # Seed before anything random is built (heads, LoRA matrices): a resumed run that skipped the
    # baseline must initialise exactly like an uninterrupted one.
    torch.manual_seed(config.training_seed)
    tokenizer = load_tokenizer(ref)
    quantize = config.method_name == "qlora"
    if config.objective == "head":
        model = _load_head_model(spec, ref, config, tokenizer, quantize)
        task_type = "QUESTION_ANS" if isinstance(spec.kind, ExtractiveQA) else "SEQ_CLS"
    else:
        model = load_lm(ref, quantize_4bit=quantize)
        task_type = "SEQ_2_SEQ_LM" if ref.family == "seq2seq" else "CAUSAL_LM"
    if not quantize:
        model = model.to(device())
    model = apply_method(model, config, task_type)
    items = train_items(spec, ref, config, tokenizer, splits.train)

    if not spec.is_classification:
        # Text tasks validate on held-out loss: generating for every validation example at every
        # evaluation would cost more than the training itself on a CPU.
        held_out = train_items(spec, ref, config, tokenizer, splits.validation)

        def validate(current: Any) -> dict[str, float]:
            return {"loss": validation_loss(current, held_out, tokenizer.pad_token_id, config.eval_batch_size,
                                            config.precision)}
    else:
        validate = _classification_validator(spec, ref, config, tokenizer, splits)
    criterion = spec.kind.validation_metrics[0] if config.early_stop_metric == "auto" else config.early_stop_metric
    result = train(model, items, config, tokenizer.pad_token_id, validate, log,
                   state_dir=checkpoint.with_name(TRAIN_STATE), criterion=criterion, launcher=launcher)
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
            "device": str(device()), "checkpoint": str(checkpoint)}
    return model, tokenizer, result, info


def merged_for_inference(model: Any, config: RunConfig) -> Any:
    """LoRA folded into the weights (as `load_checkpoint` does): evaluation then runs at base speed.
    QLoRA adapters stay separate: merging into 4-bit weights would re-quantize them."""
    if config.method_name == "lora" and hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def _classification_validator(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                              splits: Splits) -> Any:
    def validate(current: Any) -> dict[str, float]:
        predictions = _predict(spec, ref, config, current, tokenizer, splits.validation, splits.demos_from,
                               config.objective)
        if all(p.label is None for p in predictions):  # every score inf/nan: a broken model, not a bad one
            return {"f1_macro": math.nan, "accuracy": math.nan}
        report = classification_report([p.gold for p in predictions], [p.label for p in predictions],
                                       spec.kind.labels, resamples=0)
        return {"f1_macro": report["f1_macro"]["value"], "accuracy": report["accuracy"]["value"]}

    return validate


def prompt_record(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any) -> dict[str, Any]:
    """How the model was prompted, for using an `--objective lm` checkpoint without bench: the
    task's str.format template over its fields (or the function that builds it), the label
    verbalizers scored after it, and whether generation prompts went through the chat template."""
    record: dict[str, Any] = {"prompt": spec.prompt, "prompt_fields": list(spec.kind.fields)}
    if spec.formatter is not None:  # e.g. alpaca: a template with an optional section
        record["prompt_builder"] = f"{spec.formatter.__module__}.{spec.formatter.__qualname__}"
    if isinstance(spec.kind, Classify):
        record["verbalizers"] = list(spec.kind.verbalizers)
    if isinstance(spec.kind, Generate):
        record["chat_template"] = use_chat_template(tokenizer, config.chat_template, ref.family == "seq2seq")
    return record
