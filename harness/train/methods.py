"""Fine-tune methods: decide which parameters train (full, lora, qlora, freeze:N, head).

LoRA targets come from peft's per-architecture defaults (attention query/value projections:
c_attn for GPT-2, q_proj/v_proj for Llama/GPT-Neo/Qwen, query/value for BERT, q/v for T5),
overridable with --lora-targets. The classification head always trains.
"""
from __future__ import annotations

from typing import Any

from harness.options import RunConfig
from harness.errors import BenchError
from harness.backends.models import HEAD_MODULE_NAMES

BLOCK_CONTAINERS = ("h", "layers", "layer", "block", "blocks")
FINAL_NORMS = ("ln_f", "norm", "final_layer_norm")


def four_bit_unavailable() -> str | None:
    """Why 4-bit (QLoRA) cannot run here, or None when it can: quantise and run one layer."""
    try:
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to("cuda" if torch.cuda.is_available() else "cpu")
        layer(torch.ones(1, 64, device=layer.weight.device))
    except ImportError:
        return "bitsandbytes is not installed (pip install 'bench[qlora]')"
    except Exception as exc:  # bitsandbytes raises various errors when no backend supports 4-bit
        return f"bitsandbytes cannot run 4-bit on this machine ({type(exc).__name__}: {str(exc)[:80]})"
    return None


HEAD_TASKS = ("SEQ_CLS", "QUESTION_ANS")  # peft task types whose new head must train in full


def gradient_checkpointing_wanted(model: Any, config: RunConfig, text_targets: bool) -> bool:
    """`--gradient-checkpointing`, with auto settled: on for LM-objective training on text targets
    when transformers can checkpoint the model.

    Measured (smollm2 LoRA, CPU, finetune stage peak RSS): samsum quick (batch 8 x 384) 7.0 -> 2.8 GB,
    the same losses; sst2 quick (short sentences) 2.9 -> 1.6 GB, memory no one runs short of, so
    there auto spares the recomputation (~1/3 more compute). README: "Activation checkpointing".
    """
    if config.gradient_checkpointing == "auto":
        supported = getattr(model, "supports_gradient_checkpointing", False)
        return config.objective == "lm" and text_targets and supported
    return config.gradient_checkpointing == "on"


def apply_method(model: Any, config: RunConfig, task_type: str, checkpointing: bool = False) -> Any:
    """Return the model ready to train: frozen parts frozen, adapters attached, and with
    `checkpointing` the blocks' activations recomputed in the backward pass."""
    if checkpointing:
        _enable_gradient_checkpointing(model)
    model = _apply_method(model, config, task_type)
    if checkpointing and not any(param.requires_grad for param in model.get_input_embeddings().parameters()):
        # frozen embeddings: make their output require grad, so the first checkpointed block has a
        # graph to recompute into (what transformers and peft do for adapters)
        model.enable_input_require_grads()
    return model


def _enable_gradient_checkpointing(model: Any) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise BenchError(f"--gradient-checkpointing on: {type(model).__name__} does not support it in transformers; "
                         "use --gradient-checkpointing off")
    # non-reentrant: recomputes with the same RNG state (dropout masks), works with frozen inputs;
    # transformers 5 renamed the method (the old name warns), 4.x has only the old one
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _apply_method(model: Any, config: RunConfig, task_type: str) -> Any:
    method = config.method_name
    if method in ("lora", "qlora"):
        return _attach_lora(model, config, task_type)
    if method == "full":
        for param in model.parameters():
            param.requires_grad = True
        return model
    for param in model.parameters():
        param.requires_grad = False
    if task_type in HEAD_TASKS:
        _unfreeze_head(model)
    if method == "freeze":
        blocks = transformer_blocks(model)
        count = config.freeze_blocks or 0
        if count > len(blocks):
            raise BenchError(f"--method freeze:{count}: the model has only {len(blocks)} blocks")
        for block in blocks[-count:]:
            for param in block.parameters():
                param.requires_grad = True
        for name, module in model.named_modules():
            if name.split(".")[-1] in FINAL_NORMS and not any(f".{c}." in f".{name}." for c in BLOCK_CONTAINERS):
                for param in module.parameters():
                    param.requires_grad = True
    elif task_type not in HEAD_TASKS:
        raise BenchError("--method head needs a classification head: use --objective head")
    return model


def _unfreeze_head(model: Any) -> None:
    found = False
    for name, module in model.named_modules():
        if name.split(".")[-1] in HEAD_MODULE_NAMES:
            found = True
            for param in module.parameters():
                param.requires_grad = True
    if not found:
        raise BenchError(f"cannot find the classification head of {type(model).__name__}")


def transformer_blocks(model: Any) -> list[Any]:
    """The repeated blocks: the outermost ModuleList named like h/layers/layer/block (a T5 block
    holds its own `layer` list of attention, cross-attention and MLP), the decoder's when an
    encoder-decoder has two stacks: its last blocks are the ones nearest the output."""
    import torch

    lists = {name: module for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in BLOCK_CONTAINERS}
    outermost = {name: module for name, module in lists.items()
                 if not any(name.startswith(other + ".") for other in lists if other != name)}
    if not outermost:
        raise BenchError(f"--method freeze:N: cannot find the transformer blocks of {type(model).__name__}")
    decoders = [module for name, module in outermost.items() if "decoder" in name.split(".")]
    return list(decoders[-1] if decoders else max(outermost.values(), key=len))


def _attach_lora(model: Any, config: RunConfig, task_type: str) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.method_name == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    heads = sorted({name.split(".")[-1] for name, _ in model.named_modules()
                    if name.split(".")[-1] in HEAD_MODULE_NAMES}) if task_type in HEAD_TASKS else None
    lora = LoraConfig(task_type=task_type, r=config.lora_rank, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets) if config.lora_targets else None,
                      modules_to_save=heads or None)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise BenchError(f"LoRA cannot attach to {type(model).__name__}: {str(exc).splitlines()[0]}; "
                         "name the layers with --lora-targets") from None
