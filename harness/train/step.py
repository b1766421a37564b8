"""One batch's forward and backward, and the out-of-memory back-off around it.

Loss weighting (kept exactly as bench has always trained; not torchtune's token weighting): the
model's loss on a piece is its own mean (over target tokens for LM items, over examples for heads);
the pieces of a batch are weighted by their example counts, and each batch by 1/--grad-accum. So
every batch weighs the same in a step whatever its token count, and splitting a batch into pieces
changes its gradient only by the per-token averaging inside each piece.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from harness.backends.batching import batch_loss, collate
from harness.backends.precision import autocast
from harness.errors import BenchError
from harness.faults import reached
from harness.options import RunConfig
from harness.train.batching import micro_batches
from harness.train.state import Position
from harness.types import TrainItem


def run_batch(forward: Any, batch: Sequence[TrainItem], position: Position, optimizer: Any, config: RunConfig,
              pad_id: int, device: Any, precision: str, log: Callable[[str], None]) -> tuple[float, int]:
    """Forward and backward of one batch: (loss, real tokens). Out of device memory, the batch is
    retried in twice as many pieces (the same effective batch), down to one example per piece."""
    import torch

    while True:
        try:
            poisoned = position.chunks == 1 and reached("train-step", position.step)
            loss, tokens = forward_backward(forward, batch, position.chunks, config.grad_accum, pad_id, device,
                                            precision)
            return (math.nan if poisoned else loss), tokens
        except torch.OutOfMemoryError:
            if position.chunks >= len(batch):
                raise BenchError(f"out of memory even at 1 example per forward pass (step {position.step}); lower "
                                 "--max-length or use --method lora/qlora") from None
            # Drop the failed attempt's partial gradient; batches already accumulated for this step
            # go with it (the step restarts its accumulation window), once per back-off.
            optimizer.zero_grad(set_to_none=True)
            position.restart_window()
            position.chunks *= 2
            _free_cache(device)
            log(f"  out of memory: batch now runs as {position.chunks} pieces of "
                f"~{math.ceil(len(batch) / position.chunks)} examples (same effective batch)")


def forward_backward(model: Any, batch: Sequence[TrainItem], chunks: int, grad_accum: int, pad_id: int,
                     device: Any, precision: str = "fp32") -> tuple[float, int]:
    """Loss of the batch (a float) and its real tokens, gradients accumulated. In `chunks` pieces
    the per-piece losses are weighted by piece size, so the gradient is the whole batch's (up to the
    per-token averaging of LM losses inside each piece)."""
    total, tokens = 0.0, 0
    for piece in micro_batches(batch, chunks):
        inputs = collate(piece, pad_id, device)
        with autocast(precision, device):  # the forward only: backward follows the forward's dtypes
            loss = batch_loss(model, inputs, lm_targets=piece[0].lm_labels is not None)
        share = len(piece) / len(batch)
        if not bool(loss.isfinite()):
            return float(loss.item()), tokens
        (loss * share / grad_accum).backward()
        total += loss.item() * share
        tokens += int(inputs["attention_mask"].sum())
    return total, tokens


def _free_cache(device: Any) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()
