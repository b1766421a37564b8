"""Bench checkpoints: the fine-tuned model written beside its run, and read back for evaluation.

A checkpoint folder holds the adapter (LoRA/QLoRA, with the trained head) or the full weights, the
tokenizer, and bench_checkpoint.json: the task, the base model and where it loads from, the method
and objective, the labels, how the model was prompted, and the run's config. Training writes it
(`save_checkpoint`); `bench run`'s finetuned stage, `bench eval` and the lm-eval bridge read it
(`load_checkpoint`), so it lives with the backends: evaluation imports nothing from train/.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.artefacts import DamagedFile, check_safetensors_file, read_json, writing
from harness.backends.model_files import check_local_model
from harness.backends.models import ModelRef, load_classifier, load_lm, load_span_model, load_tokenizer, resolve_model
from harness.backends.precision import device
from harness.errors import BenchError
from harness.kinds import kind_named

if TYPE_CHECKING:
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec

CHECKPOINT_FILE = "bench_checkpoint.json"
# What to do about a run's checkpoint that is gone or cannot be read.
RETRAIN = ("re-run the `bench run` (or `bench sweep`) that trained it: a run whose checkpoint is missing or damaged "
           "trains it again, and keeps its other stored stages")


def save_checkpoint(model: Any, tokenizer: Any, path: Path, spec: "TaskSpec", ref: ModelRef, config: "RunConfig",
                    prompt: dict[str, Any]) -> None:
    """Adapter (LoRA/QLoRA, with the trained head) or full weights, plus what is needed to reload
    it; written to a temp folder and renamed, so a checkpoint folder is always whole. `prompt`: how
    the model was prompted (the kind's prompt record), stored with the rest."""
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
                    **prompt, "config": config.to_dict()}
            (staging / CHECKPOINT_FILE).write_text(json.dumps(meta, indent=2))
        except Exception:  # a full disk: leave no half checkpoint taking the space (a kill: the re-run)
            shutil.rmtree(staging, ignore_errors=True)
            raise
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)


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
