"""The processes of one run: one by default, N under `torchrun` / `accelerate launch` / `srun`.

The launcher sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous (MASTER_ADDR/MASTER_PORT);
bench joins that process group (NCCL on GPUs, gloo on CPUs) and every rank runs the same
command: training is data-parallel (DDP, or FSDP2 with --fsdp), evaluation shards the requests,
and rank 0 alone writes the store, run folders and tables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among `world` processes (1: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def all_gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank (pickled: small python values)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank: decisions only rank 0 can make (it reads the store)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def shard(self, count: int) -> list[int]:
        """This rank's indices of `count` items: every world-th one, so long and short items (the
        lists are often length-sorted) spread evenly over the ranks."""
        return list(range(self.rank, count, self.world))

    def gather_in_order(self, count: int, answers: Sequence[T]) -> list[T]:
        """This rank's answers for `shard(count)`, gathered from all ranks back into item order."""
        merged: list[Any] = [None] * count
        for rank, part in enumerate(self.all_gather(list(answers))):
            for index, answer in zip(range(rank, count, self.world), part):
                merged[index] = answer
        return merged


SINGLE = Ranks()


def join() -> Ranks:
    """The process group the launcher set up in this process's environment, joined once; one
    process (rank 0 of 1) when no launcher ran it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        # gloo runs collectives on CPU tensors (and pickled objects) without a GPU.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(rank, world, local_rank)
