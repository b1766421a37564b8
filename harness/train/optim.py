"""The optimizer, its learning-rate schedule, and the update that ends each accumulation window."""
from __future__ import annotations

import math
from typing import Any, Sequence

from harness.errors import BenchError
from harness.options import RunConfig
from harness.train.batching import StepPlan


def make_optimizer(model: Any, config: RunConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            # Biases and norm weights are not decayed (standard BERT/GPT practice).
            (no_decay if param.ndim < 2 else decay).append(param)
    if not decay and not no_decay:
        raise BenchError("no trainable parameters: check --method")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        # The fused CUDA kernel updates all tensors in one launch instead of a dozen per parameter.
        on_cuda = all(param.is_cuda for group in groups for param in group["params"])
        return torch.optim.AdamW(groups, lr=config.lr, fused=on_cuda or None)
    momentum = 0.9 if config.optimizer == "sgd-momentum" else 0.0
    return torch.optim.SGD(groups, lr=config.lr, momentum=momentum)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then linear / cosine decay to 0, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - progress) if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer: Any, plan: StepPlan, schedule: str) -> Any:
    """lr at step s = --lr x lr_factor(s): one scheduler step per optimizer step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, plan.total_steps, plan.warmup_steps, schedule))


def optimizer_step(optimizer: Any, scheduler: Any, trainable: Sequence[Any], batches: int,
                   config: RunConfig) -> float:
    """Apply the accumulated gradient; returns the learning rate this update used.

    Each batch's loss was divided by --grad-accum before its backward, so the gradient is the mean
    over the window's batches (each batch weighs the same, whatever its token count). An epoch's
    short last window (fewer than --grad-accum batches) is scaled back up to the mean of its own."""
    import torch

    if batches < config.grad_accum:
        for param in trainable:
            if param.grad is not None:
                param.grad.mul_(config.grad_accum / batches)
    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    used_lr = scheduler.get_last_lr()[0]  # the rate this update applies (step() moves to the next)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(used_lr)
