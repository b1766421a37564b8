"""Data-parallel training on torch.distributed: DDP for every method, FSDP2 for full fine-tuning.

Every rank builds the same global batches (same seed, same order); rank r trains on items
r, r + N, r + 2N ... of each, so the global batch, the learning-rate schedule and the number of
steps equal the single-process run's. Each rank weights a piece's loss by its share of the global
batch times N, and DDP averages the N gradients: the sum is the whole batch's gradient, exactly as
one process computes it (heads: exactly; LM losses: up to the per-token averaging inside each
rank's piece, as with the out-of-memory pieces, see step.py). Gradients are synchronised once per
optimizer step (`no_sync` on every other backward, accumulation batches and back-off pieces
alike), so clipping sees the full, synchronised gradient.

The process group itself (ranks, collectives, who writes) is harness/distributed.py, shared with
evaluation; only what training does with it lives here.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Sequence, TypeVar

from harness.backends.data_parallel import fsdp_sharded
from harness.distributed import Launcher
from harness.errors import BenchError

Item = TypeVar("Item")


def wrap(model: Any, launcher: Launcher, *, fsdp: bool) -> Any:
    """The module the training forward runs through: the model itself on one process, DDP around
    it on several, or the model sharded in place by FSDP2 (`fully_shard`, block by block) with
    --fsdp. Build the optimizer after this: FSDP2 turns the parameters into sharded DTensors."""
    if not launcher.distributed:
        return model
    import torch

    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in _blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [launcher.local_rank] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def resharded(model: Any) -> None:
    """After a forward outside training (validation): FSDP2 keeps the root module's weights
    gathered after its forward (a backward would need them at once); shard them again, so every
    weight is the DTensor the optimizer updates when the best weights are copied, saved or restored."""
    for module in model.modules():
        if fsdp_sharded(module):
            module.reshard()


def _blocks(model: Any) -> list[Any]:
    """The transformer blocks FSDP2 shards one by one (each gathered only while it runs)."""
    import torch

    layers = [module for module in model.modules() if isinstance(module, torch.nn.ModuleList)]
    return list(max(layers, key=len)) if layers else []


def rank_items(batch: Sequence[Item], launcher: Launcher) -> list[Item]:
    """This rank's part of a global batch (empty for a rank past the end of a short last batch)."""
    return list(batch[launcher.rank::launcher.world_size])


def gradient_sync(forward: Any, sync: bool) -> ContextManager[Any]:
    """DDP all-reduces gradients in backward (FSDP2 reduce-scatters them); on every backward but an
    optimizer step's last one that is skipped (the gradients accumulate locally and are reduced once)."""
    if sync:
        return contextlib.nullcontext()
    if type(forward).__name__ == "DistributedDataParallel":
        return forward.no_sync()
    if hasattr(forward, "set_requires_gradient_sync"):  # an FSDP2-sharded module
        return _fsdp_no_sync(forward)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module: Any) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def global_sums(loss: float, tokens: int, failed: bool, launcher: Launcher) -> tuple[float, int, bool]:
    """The global batch's loss and tokens (sums of the ranks' shares), and whether any rank ran out
    of memory: one all-reduce, so every rank takes the same decision (a NaN anywhere is NaN on all)."""
    if not launcher.distributed:
        return loss, tokens, failed
    import torch
    import torch.distributed as dist

    values = torch.tensor([loss, float(tokens), float(failed)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        values = values.cuda()
    dist.all_reduce(values)
    return float(values[0]), int(values[1]), bool(values[2] > 0)


def full_weights(model: Any, plain_model: Callable[[], Any], launcher: Launcher) -> Any:
    """After FSDP training: a plain (unsharded) copy of the model with the trained weights, on
    every rank, which the checkpoint and the evaluation use. The full state dict is gathered from
    the shards (a collective: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload would hand the full tensors to rank 0 alone; every rank evaluates the plain model.
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    plain = plain_model()
    device = next(plain.parameters()).device
    plain.load_state_dict({name: value.to(device) for name, value in state.items()})
    launcher.barrier()
    return plain


def check_processes(batch_size: int, world: int, method: str, fsdp: bool) -> None:
    """What data-parallel training cannot do, as one line before any work (`world`: how many
    processes the launcher started)."""
    if world <= 1:
        if fsdp:
            raise BenchError("--fsdp shards a model over several processes: launch with torchrun "
                             "--nproc-per-node N (or accelerate launch), or drop --fsdp")
        return
    if batch_size % world:
        raise BenchError(f"--batch-size {batch_size} does not split over {world} processes: use a multiple "
                         f"of {world} (each process trains on batch-size / {world} examples per step)")
    if fsdp and method != "full":
        raise BenchError(f"--fsdp shards full fine-tuning; --method {method} trains few enough weights for DDP: "
                         "drop --fsdp (DDP is the default under torchrun)")
