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
from harness.distributed import SINGLE_PROCESS, Launcher
from harness.errors import BenchError
from harness.faults import reached
from harness.options import RunConfig
from harness.train.batching import micro_batches
from harness.train.data_parallel import global_sums, gradient_sync, rank_items
from harness.train.state import Position
from harness.types import TrainItem


def run_batch(forward: Any, batch: Sequence[TrainItem], position: Position, optimizer: Any, config: RunConfig,
              pad_id: int, device: Any, precision: str, log: Callable[[str], None],
              launcher: Launcher = SINGLE_PROCESS, sync: bool = True) -> tuple[float, int]:
    """Forward and backward of one global batch (this rank's part of it): (loss, real tokens) of the
    whole batch. Out of device memory, the batch is retried in twice as many pieces (the same
    effective batch), down to one example per piece; over several processes every rank backs off
    together (`global_sums` tells each whether any ran out; an out-of-memory in the synchronising
    backward itself cannot be recovered: the others are inside the gradient all-reduce). `sync`:
    whether this batch ends its optimizer step (gradients reduced over the ranks in its backward)."""
    import torch

    while True:
        poisoned = False
        try:
            poisoned = position.chunks == 1 and reached("train-step", position.step)  # may raise an injected OOM
            loss, tokens = forward_backward(forward, batch, position.chunks, config.grad_accum, pad_id, device,
                                            precision, launcher, sync)
            out_of_memory = False
        except torch.OutOfMemoryError:
            loss, tokens, out_of_memory = 0.0, 0, True
        loss, tokens, out_of_memory = global_sums(loss, tokens, out_of_memory, launcher)
        if not out_of_memory:
            return (math.nan if poisoned else loss), tokens
        if position.chunks >= len(batch):
            raise BenchError(f"out of memory even at 1 example per forward pass (step {position.step}); lower "
                             "--max-length or use --method lora/qlora")
        # Drop the failed attempt's partial gradient; batches already accumulated for this step
        # go with it (the step restarts its accumulation window), once per back-off.
        optimizer.zero_grad(set_to_none=True)
        position.restart_window()
        position.chunks *= 2
        _free_cache(device)
        log(f"  out of memory: batch now runs as {position.chunks} pieces of "
            f"~{math.ceil(len(batch) / position.chunks)} examples (same effective batch)")


def forward_backward(model: Any, batch: Sequence[TrainItem], chunks: int, grad_accum: int, pad_id: int,
                     device: Any, precision: str = "fp32", launcher: Launcher = SINGLE_PROCESS,
                     sync: bool = True) -> tuple[float, int]:
    """This rank's share of the batch's loss (a float; the whole loss on one process) and its real
    tokens, gradients accumulated. In `chunks` pieces the per-piece losses are weighted by piece
    size, so the gradient is the whole batch's (up to the per-token averaging of LM losses inside
    each piece); over N ranks each piece also weighs N times more, since DDP averages the ranks'
    gradients. Only the last backward of a `sync` batch reduces gradients over the ranks."""
    mine = rank_items(batch, launcher)
    # A rank past the end of a short last batch still runs one zero-weighted forward/backward:
    # DDP's gradient all-reduce needs every rank.
    pieces = micro_batches(mine, chunks) if mine else [batch[:1]]
    total, tokens = 0.0, 0
    for index, piece in enumerate(pieces):
        inputs = collate(piece, pad_id, device)
        share = len(piece) / len(batch) if mine else 0.0
        with gradient_sync(model, sync and index == len(pieces) - 1):
            with autocast(precision, device):  # the forward only: backward follows the forward's dtypes
                loss = batch_loss(model, inputs, lm_targets=piece[0].lm_labels is not None)
            if not launcher.distributed and not bool(loss.isfinite()):
                return float(loss.item()), tokens
            # Over several ranks a NaN still runs its backward (the others wait in its all-reduce);
            # the global loss is NaN on every rank then, and training stops on all of them.
            (loss * share * launcher.world_size / grad_accum).backward()
        if mine:
            total += loss.item() * share
            tokens += int(inputs["attention_mask"].sum())
    return total, tokens


def _free_cache(device: Any) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()
