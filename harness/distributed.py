"""The processes of one command: one by default, N under `torchrun` / `accelerate launch` / `srun`.

One process-group type serves the whole harness: the runner (rank 0 alone writes the store, run
folders, tables, checkpoints and the training state; the others wait at a barrier), evaluation
(backends/data_parallel.py: each rank answers its shard of the requests) and training
(train/data_parallel.py: DDP, or FSDP2 with --fsdp; the model wrapping lives there, not here).

The launcher sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous (MASTER_ADDR/MASTER_PORT);
`join()` joins that process group (NCCL on GPUs, gloo on CPUs) and every rank runs the same command.
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Launcher(Protocol):
    """The process group a command runs in."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def local_rank(self) -> int: ...

    @property
    def is_main(self) -> bool: ...

    @property
    def distributed(self) -> bool: ...

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (a picklable python object), in rank order, on every rank."""

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank: decisions only rank 0 makes (it alone reads the store)."""

    def shard(self, count: int) -> list[int]:
        """This rank's indices of `count` items."""

    def gather_in_order(self, count: int, answers: Sequence[Any]) -> list[Any]:
        """This rank's answers for `shard(count)`, gathered from all ranks back into item order."""

    def rejoin(self) -> None:
        """Join the process group again if an engine tore it down (vLLM's does at shutdown)."""


class _Ranks:
    """What both launchers share: strided shards (every world-th item, so long and short items of a
    length-sorted list spread evenly over the ranks) and their answers put back in item order."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def shard(self, count: int) -> list[int]:
        return list(range(self.rank, count, self.world_size))

    def gather_in_order(self, count: int, answers: Sequence[Any]) -> list[Any]:
        merged: list[Any] = [None] * count
        for rank, part in enumerate(self.all_gather(list(answers))):
            for index, answer in zip(range(rank, count, self.world_size), part):
                merged[index] = answer
        return merged


class Replicas(_Ranks):
    """The ranks seen as groups of `size` consecutive ranks that answer as one (a vLLM engine spread
    over them by tensor parallelism): each group answers one shard, every rank of a group the same
    requests, and the group's first rank's answers stand for it."""

    def __init__(self, ranks: Launcher, size: int) -> None:
        self.ranks, self.size = ranks, size
        self.rank, self.world_size = ranks.rank // size, ranks.world_size // size

    def all_gather(self, value: Any) -> list[Any]:
        return self.ranks.all_gather(value)[::self.size]


class SingleProcess(_Ranks):
    """One process, rank 0 of 1: every collective is the identity."""

    rank, world_size, local_rank = 0, 1, 0

    def barrier(self) -> None:
        return None

    def rejoin(self) -> None:
        return None

    def broadcast(self, value: T) -> T:
        return value


class TorchDistributed(_Ranks):
    """Rank `rank` of `world_size` processes in the default torch.distributed group."""

    def __init__(self, rank: int, world_size: int, local_rank: int) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.joins = 1  # the group's generation: each rejoin gets its own keys in the launcher's store

    def __repr__(self) -> str:
        return f"TorchDistributed(rank={self.rank}, world_size={self.world_size})"

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: T) -> T:
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def rejoin(self) -> None:
        """vLLM's engine under torchrun (its external launcher) works in this process group and
        destroys every group when it shuts down. Join again through the store torchrun's agent keeps
        at MASTER_ADDR:MASTER_PORT, under a key prefix of our own: the old groups' keys are still
        there, and a new group reading them would dial ports that are closed."""
        import datetime

        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        self.joins += 1
        if torch.cuda.is_available():  # NCCL binds the group to the current device: this rank's again
            torch.cuda.set_device(self.local_rank)
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(minutes=10))
        dist.init_process_group(_backend(), store=dist.PrefixStore(f"bench-join-{self.joins}", store),
                                rank=self.rank, world_size=self.world_size)


SINGLE_PROCESS = SingleProcess()  # stateless, so one instance serves every default


def launched_world() -> int:
    """How many processes the launcher started (1 when none did): known before joining anything."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def require_one_process(command: str) -> None:
    """A command that runs in one process only: under torchrun every rank would do (and write) it all."""
    if launched_world() > 1:
        from harness.errors import BenchError

        raise BenchError(f"bench {command} runs in one process: start it without torchrun / accelerate launch "
                         "(bench run is the command that runs over several processes)")


def join() -> Launcher:
    """The process group the launcher set up in this process's environment, joined once; one
    process (rank 0 of 1) when no launcher ran it."""
    world = launched_world()
    if world <= 1:
        return SINGLE_PROCESS
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(_backend())
    return TorchDistributed(rank, world, local_rank)


def _backend() -> str:
    import torch

    # gloo runs collectives on CPU tensors (and pickled objects) without a GPU.
    return "nccl" if torch.cuda.is_available() else "gloo"


def leave() -> None:
    """Leave the process group (at the end of a command), so no rank exits with collectives pending."""
    if launched_world() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
