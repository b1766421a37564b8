"""The work inside each stage: load what it needs, put the model behind a backend, ask the task's
kind to predict (or to build training items), describe what it did.

Each function returns (predictions, metrics, info, curves) or the fine-tuned model; the
pipeline owns skipping, timing and storing.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from harness.artefacts import DamagedFile, check_safetensors_file, read_json, writing
from harness.backends.batch_size import start_batch_size
from harness.backends.hf import HFBackend
from harness.backends.models import (
    ModelRef,
    check_local_model,
    load_classifier,
    load_lm,
    load_span_model,
    load_tokenizer,
    parameter_counts,
    resolve_model,
)
from harness.backends.precision import resolved_precision
from harness.errors import BenchError
from harness.kinds import kind_named
from harness.options import RunConfig
from harness.task.spec import TaskSpec
from harness.train.loop import TrainResult, train
from harness.train.methods import apply_method
from harness.train.validate import validation_loss
from harness.types import Example, Splits, StageOutput, TrainItem

CHECKPOINT_FILE = "bench_checkpoint.json"
# What to do about a run's checkpoint that is gone or cannot be read.
RETRAIN = ("re-run the `bench run` (or `bench sweep`) that trained it: a run whose checkpoint is missing or damaged "
           "trains it again, and keeps its other stored stages")
TRAIN_STATE = "train_state"  # beside the checkpoint: the resumable mid-training state


def device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    """A new, seeded head: the kind's span start/end head, or a classification head over its labels."""
    if spec.kind.head == "span":
        return load_span_model(ref, seed=config.training_seed, quantize_4bit=quantize_4bit)
    labels = spec.kind.labels  # type: ignore[attr-defined]  # a classifier head is over the kind's labels
    return load_classifier(ref, labels, tokenizer.pad_token_id, seed=config.training_seed, quantize_4bit=quantize_4bit)


def evaluate_model(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any,
                   splits: Splits) -> StageOutput:
    return _evaluate(spec, ref, config, model, tokenizer, splits, config.objective)


def backend_for(ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any, batch_size: int) -> HFBackend:
    """The loaded model behind the backend contract the kinds call."""
    return HFBackend(model, tokenizer, ref.family == "seq2seq", batch_size, config.precision, device())


def _evaluate(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any, splits: Splits,
              objective: str) -> StageOutput:
    started = time.perf_counter()
    # Start from the requested size capped by a memory estimate; the backend halves it on out-of-memory.
    batch = start_batch_size(model, config.eval_batch_size, config.max_length + (config.max_new_tokens or 0), device())
    backend = backend_for(ref, config, model, tokenizer, batch)
    predictions = spec.kind.predict(spec, backend, splits.eval, splits.demos_from, config, objective)
    seconds = time.perf_counter() - started
    info = {"mode": "prompt" if objective == "lm" else "head", "shots": spec.kind.shots(config, objective),
            "eval_batch_size": backend.batch_size, "eval_batch_requested": config.eval_batch_size,
            "precision": resolved_precision(config.precision, device()),
            "params": parameter_counts(model), "examples": len(predictions),
            "examples_per_second": round(len(predictions) / seconds, 2) if seconds else None}
    return predictions, {}, info, []


def train_items(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                examples: tuple[Example, ...]) -> list[TrainItem]:
    """What fine-tuning learns from, as the task's kind builds it for `config.objective`."""
    return spec.kind.train_items(spec, tokenizer, ref.family == "seq2seq", config, examples)


def finetune(spec: TaskSpec, ref: ModelRef, config: RunConfig, splits: Splits, checkpoint: Path,
             log: Any) -> tuple[Any, Any, TrainResult, dict[str, Any]]:
    import torch

    # Seed before anything random is built (heads, LoRA matrices): a resumed run that skipped the
    # baseline must initialise exactly like an uninterrupted one.
    torch.manual_seed(config.training_seed)
    tokenizer = load_tokenizer(ref)
    quantize = config.method_name == "qlora"
    if config.objective == "head":
        model = _load_head_model(spec, ref, config, tokenizer, quantize)
        task_type = "QUESTION_ANS" if spec.kind.head == "span" else "SEQ_CLS"
    else:
        model = load_lm(ref, quantize_4bit=quantize)
        task_type = "SEQ_2_SEQ_LM" if ref.family == "seq2seq" else "CAUSAL_LM"
    if not quantize:
        model = model.to(device())
    model = apply_method(model, config, task_type)
    items = train_items(spec, ref, config, tokenizer, splits.train)

    if spec.kind.validation_metrics == ("loss",):
        # Text tasks validate on held-out loss: generating for every validation example at every
        # evaluation would cost more than the training itself on a CPU.
        held_out = train_items(spec, ref, config, tokenizer, splits.validation)

        def validate(current: Any) -> dict[str, float]:
            return {"loss": validation_loss(current, held_out, tokenizer.pad_token_id, config.eval_batch_size,
                                            config.precision)}
    else:
        validate = _predicting_validator(spec, ref, config, tokenizer, splits)
    criterion = spec.kind.validation_metrics[0] if config.early_stop_metric == "auto" else config.early_stop_metric
    result = train(model, items, config, tokenizer.pad_token_id, validate, log,
                   state_dir=checkpoint.with_name(TRAIN_STATE), criterion=criterion)
    save_checkpoint(model, tokenizer, checkpoint, spec, ref, config)
    params = parameter_counts(model)
    info = {"params": params, **flops_accounting(params["total"], result.train_tokens, result.train_seconds),
            "steps": result.steps, "epochs": round(result.epochs, 3),
            "train_examples": len(items), "train_tokens": result.train_tokens,
            "train_seconds": round(result.train_seconds, 2), "validation_seconds": round(result.validation_seconds, 2),
            "tokens_per_second": round(result.tokens_per_second, 1), "stopped_early": result.stopped_early,
            "oom_backoff_pieces": result.oom_chunks, "precision": resolved_precision(config.precision, device()),
            "device": str(device()), "checkpoint": str(checkpoint)}
    return model, tokenizer, result, info


# Dense bf16 tensor-core peaks (FLOP/s) of common training GPUs, for MFU; others report no MFU.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12,
                 "RTX 4090": 165e12}


def flops_accounting(parameters: float, train_tokens: int, seconds: float) -> dict[str, Any]:
    """Training FLOPs by the 6N-per-token rule (2N forward + 4N backward; an overestimate for
    LoRA, whose frozen weights get no weight gradients), achieved FLOP/s, and on a known GPU the
    model FLOPs utilisation against its dense bf16 peak."""
    import torch

    flops = 6.0 * parameters * train_tokens
    achieved = flops / seconds if seconds else 0.0
    found: dict[str, Any] = {"train_flops": flops, "train_tflops_per_s": round(achieved / 1e12, 4)}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((value for key, value in GPU_PEAK_BF16.items() if key in name), None)
        found.update(gpu=name, mfu=round(achieved / peak, 4) if peak else None)
    return found


def merged_for_inference(model: Any, config: RunConfig) -> Any:
    """LoRA folded into the weights (as `load_checkpoint` does): evaluation then runs at base speed.
    QLoRA adapters stay separate: merging into 4-bit weights would re-quantize them."""
    if config.method_name == "lora" and hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def _predicting_validator(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any, splits: Splits) -> Any:
    """Validation by the kind's own metrics on predictions for the validation split."""
    def validate(current: Any) -> dict[str, float]:
        backend = backend_for(ref, config, current, tokenizer, config.eval_batch_size)
        predictions = spec.kind.predict(spec, backend, splits.validation, splits.demos_from, config, config.objective)
        return spec.kind.validation_values(spec, predictions)

    return validate


def save_checkpoint(model: Any, tokenizer: Any, path: Path, spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """Adapter (LoRA/QLoRA, with the trained head) or full weights, plus what is needed to reload
    it; written to a temp folder and renamed, so a checkpoint folder is always whole."""
    staging = path.with_name(path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    adapter = config.method_name in ("lora", "qlora")
    with writing(staging):  # a full disk: one error line naming the folder, not a SafetensorError traceback
        try:
            # An adapter folder holds no config.json: transformers would take one for a full model's
            # and `AutoModelFor*.from_pretrained(checkpoint)` would then look for its weights instead of
            # loading the base named in adapter_config.json. What the base config told a reader (labels,
            # pad id, 4-bit settings) is in bench_checkpoint.json instead.
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            base_config = (model.get_base_model() if adapter else model).config
            quantization = getattr(base_config, "quantization_config", None)
            meta = {"task": spec.key, "kind": type(spec.kind).__name__,
                    "labels": list(getattr(spec.kind, "labels", ())), "model": ref.name, "base_source": ref.source,
                    "family": ref.family, "method": config.method, "objective": config.objective,
                    "adapter": adapter, "pad_token_id": tokenizer.pad_token_id,
                    "quantization": quantization.to_dict() if hasattr(quantization, "to_dict") else quantization,
                    **prompt_record(spec, ref, config, tokenizer), "config": config.to_dict()}
            (staging / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2))
        except Exception:  # a full disk: leave no half checkpoint taking the space (a kill: the re-run)
            shutil.rmtree(staging, ignore_errors=True)
            raise
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)


def prompt_record(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any) -> dict[str, Any]:
    """How the model was prompted, for using an `--objective lm` checkpoint without bench: the
    task's str.format template over its fields (or the function that builds it), the label
    verbalizers scored after it, and whether generation prompts went through the chat template."""
    record: dict[str, Any] = {"prompt": spec.prompt, "prompt_fields": list(spec.kind.fields)}
    if spec.formatter is not None:  # e.g. alpaca: a template with an optional section
        record["prompt_builder"] = f"{spec.formatter.__module__}.{spec.formatter.__qualname__}"
    return {**record, **spec.kind.prompt_record(spec, tokenizer, config, ref.family == "seq2seq")}


def checkpoint_meta(path: Path) -> dict[str, Any] | None:
    """What `save_checkpoint` wrote beside the weights (task, base model, objective, run config);
    None when `path` is not a bench checkpoint."""
    meta_file = path / CHECKPOINT_FILE
    if not meta_file.is_file():
        return None
    meta = read_json(meta_file, RETRAIN)
    if not isinstance(meta, dict):
        raise DamagedFile(str(meta_file), f"a JSON {type(meta).__name__}, not an object", RETRAIN)
    return meta


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be loaded (missing, its record or a weights file damaged),
    read from the files' headers alone; None when it is whole."""
    if not path.is_dir():
        return f"{path} is missing"
    try:
        if checkpoint_meta(path) is None:
            return f"{path} has no {CHECKPOINT_FILE}"
        for weights in sorted(path.glob("*.safetensors")):
            check_safetensors_file(weights, RETRAIN)
    except DamagedFile as exc:
        return f"{exc.where} is damaged ({exc.reason})"
    return None


def base_source(meta: dict[str, Any]) -> str:
    """Where a checkpoint's base model loads from: the recorded source, or, when that was a local
    folder that is gone (results copied to another machine, a cleared cache), the model name the
    run was given, resolved again (an offline alias rebuilds its cache)."""
    source = str(meta["base_source"])
    if source != meta["model"] and Path(source).is_absolute() and not Path(source).exists():
        return resolve_model(meta["model"]).source
    return source


def check_checkpoint(path: Path, meta: dict[str, Any], trust_remote_code: bool) -> None:
    """A checkpoint, and an adapter's local base, pass what a local model folder passes before
    anything in them loads: no pickle weights (peft loads an adapter_model.bin wherever
    adapter_model.safetensors is missing), and no code of their own without --trust-remote-code."""
    check_local_model(path, "checkpoint", trust_remote_code)
    base = Path(base_source(meta)) if meta["adapter"] else None
    if base is not None and base.is_dir():
        check_local_model(base, f"the base model of checkpoint {path}", trust_remote_code)


def load_checkpoint(path: Path, *, trust_remote_code: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """A bench checkpoint back in memory: base + adapter (merged for speed) or full weights.
    `trust_remote_code`: the caller's --trust-remote-code, which a checkpoint of a model with its own
    code needs again (saved full weights carry that code with them)."""
    meta = checkpoint_meta(path)
    if meta is None:
        raise BenchError(f"{path} is not a bench checkpoint (no {CHECKPOINT_FILE}); evaluate a plain model with "
                         "`bench eval TASK --model PATH --baseline prompt|head`")
    check_checkpoint(path, meta, trust_remote_code)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise BenchError(f"{problem}: {RETRAIN}")

    def ref_at(source: str) -> ModelRef:  # the checkpoint's model, read from the checkpoint or its base
        return ModelRef(meta["model"], source, meta["family"], "", trust_remote_code)

    tokenizer = load_tokenizer(ref_at(str(path)))
    if meta["adapter"]:
        from peft import PeftModel

        # QLoRA adapters were trained against 4-bit weights: reload them on the same 4-bit base.
        quantized = meta["method"] == "qlora"
        base = _reload_base(meta, ref_at(base_source(meta)), tokenizer, quantized)
        # use_safetensors: peft's own switch; what guards a local folder is check_checkpoint above, as
        # peft loads adapter_model.bin wherever adapter_model.safetensors is missing.
        model = PeftModel.from_pretrained(base, path, use_safetensors=True)
        if quantized:
            return model, tokenizer, meta
        model = model.merge_and_unload()  # plain weights evaluate faster than base + adapter
    else:
        model = _reload_base(meta, ref_at(str(path)), tokenizer, False)
    return model.to(device()), tokenizer, meta


def _reload_base(meta: dict[str, Any], ref: ModelRef, tokenizer: Any, quantized: bool) -> Any:
    if meta["objective"] != "head":
        return load_lm(ref, quantize_4bit=quantized)
    kind = kind_named(meta.get("kind"))
    if kind is not None and kind.head == "span":
        return load_span_model(ref, seed=0, quantize_4bit=quantized)
    return load_classifier(ref, tuple(meta["labels"]), tokenizer.pad_token_id, seed=0, quantize_4bit=quantized)
