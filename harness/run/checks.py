"""Checks of a run's settings against the model it runs on, made when the run is planned.

Each one stands for a failure that would otherwise come only after the model loaded, the store
was opened and (in `bench run`) the baseline stored: a --max-length past the model's position
table (an IndexError or "expanded size" RuntimeError in its forward pass), a LoRA rank wider
than the layers it adapts (an allocator error on a large model).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

from harness.options import RunConfig
from harness.errors import BenchError
from harness.backends.models import ModelRef, position_limit, skeleton
from harness.task.spec import TaskSpec


def check_model_limits(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """Everything about a planned run that depends on the model's shape."""
    check_position_limit(spec, ref, config)
    if config.method_name in ("lora", "qlora"):
        check_lora_rank(spec, ref, config)


def check_position_limit(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """Every sequence bench builds is at most --max-length tokens long (a decoder's generated tokens
    included); a seq2seq model's decoder generates --max-new-tokens on its own positions."""
    limit = position_limit(ref)
    if limit is None:  # relative positions (T5): no table to run past
        return
    if config.max_length > limit:
        raise BenchError(f"--max-length {config.max_length}: {ref.name} has positions for at most {limit} tokens; "
                         f"use --max-length {limit} or less")
    new_tokens = spec.kind.generated_tokens(config)
    if new_tokens is not None and ref.family == "seq2seq":
        if new_tokens > limit:
            raise BenchError(f"--max-new-tokens {new_tokens}: {ref.name}'s decoder has positions for at most {limit} "
                             f"tokens; use --max-new-tokens {limit} or less")


def check_lora_rank(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> None:
    """A LoRA update of rank r adds r x (in + out) parameters to a layer whose own update has at most
    rank min(in, out): a larger r buys nothing, and an absurd one fails allocating its matrices."""
    widths = adapted_widths(spec, ref, config)
    if not widths:  # no head class or no matching layer: fine-tuning names that problem itself
        return
    narrowest = min(widths.values())
    if config.lora_rank > narrowest:
        narrow = sorted(name for name, width in widths.items() if width == narrowest)
        raise BenchError(f"--lora-rank {config.lora_rank}: {ref.name}'s adapted layers ({', '.join(narrow)}) are "
                         f"{narrowest} wide, so a rank above {narrowest} adds nothing; use --lora-rank {narrowest} "
                         "or less")


def adapted_widths(spec: TaskSpec, ref: ModelRef, config: RunConfig) -> dict[str, int]:
    """Layer name (last dotted part) -> min(in, out) features, for the layers LoRA would adapt:
    peft attached to the model fine-tuning builds, on the meta device (no weights, no memory)."""
    import torch

    head = "lm" if config.objective == "lm" else spec.kind.head or "classifier"
    model = skeleton(ref, head)
    if model is None:
        return {}
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional-kernel notice on import
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                      target_modules=list(config.lora_targets) if config.lora_targets else None)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # peft's fan_in_fan_out note on GPT-2's Conv1D layers
            adapted: Any = get_peft_model(model, lora)
    except Exception:  # noqa: BLE001 - peft refuses an architecture it has no targets for its own way
        return {}
    widths: dict[str, int] = {}
    for name, module in adapted.named_modules():
        if isinstance(module, LoraLayer):
            leaf = name.rsplit(".", 1)[-1]
            widths[leaf] = min(widths.get(leaf, module.in_features), module.in_features, module.out_features)
    return widths
