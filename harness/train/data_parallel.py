"""Data-parallel training on torch.distributed: DDP for every method, FSDP2 for full fine-tuning.

Every rank builds the same global batches (same seed, same order); rank r trains on items
r, r + N, r + 2N ... of each, so the global batch, the learning-rate schedule and the number of
steps equal the single-process run's. Each rank weights its loss by its share of the global
batch times N, and DDP averages the N gradients: the sum is the whole batch's gradient, exactly
as one process computes it. Gradients are synchronised once per optimizer step (`no_sync` on the
accumulation steps), and clipping sees the full, synchronised gradient.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Sequence, TypeVar

from harness.distributed import Ranks
from harness.errors import BenchError

Item = TypeVar("Item")


def wrap(model: Any, ranks: Ranks, *, fsdp: bool) -> Any:
    """The module the training forward runs through: the model itself on one process, DDP around
    it on several, or the model sharded in place by FSDP2 (`fully_shard`) with --fsdp."""
    if not ranks.distributed:
        return model
    import torch

    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in _blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [ranks.local_rank] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _blocks(model: Any) -> list[Any]:
    """The transformer blocks FSDP2 shards one by one (each gathered only while it runs)."""
    import torch

    layers = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList)]
    return list(max(layers, key=len)) if layers else []


def unwrapped(forward: Any) -> Any:
    """The model inside a DDP wrapper (its config, heads and hooks); the model itself otherwise."""
    return forward.module if type(forward).__name__ == "DistributedDataParallel" else forward


def rank_items(batch: Sequence[Item], ranks: Ranks) -> list[Item]:
    """This rank's part of a global batch."""
    return list(batch[ranks.rank::ranks.world])


def gradient_sync(forward: Any, last_piece: bool) -> ContextManager[Any]:
    """DDP all-reduces gradients in backward; on every backward but an optimizer step's last one
    that sync is skipped (the gradients accumulate locally and are reduced once)."""
    if last_piece or type(forward).__name__ != "DistributedDataParallel":
        return contextlib.nullcontext()
    return forward.no_sync()


def total(value: float, ranks: Ranks) -> float:
    """The sum of a per-rank number over all ranks (the global batch's loss and tokens)."""
    if not ranks.distributed:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def check_global_batch(batch_size: int, ranks: Ranks, method: str, fsdp: bool) -> None:
    """What data-parallel training cannot do, as one line before any work."""
    if not ranks.distributed:
        if fsdp:
            raise BenchError("--fsdp shards a model over several processes: launch with torchrun "
                             "--nproc-per-node N (or accelerate launch), or drop --fsdp")
        return
    if batch_size % ranks.world:
        raise BenchError(f"--batch-size {batch_size} does not split over {ranks.world} processes: use a multiple "
                         f"of {ranks.world} (each process trains on batch-size / {ranks.world} examples per step)")
    if fsdp and method != "full":
        raise BenchError(f"--fsdp shards full fine-tuning; --method {method} trains few enough weights for DDP: "
                         "drop --fsdp (DDP is the default under torchrun)")
