"""The launcher seam: how many processes run this command, and what they share.

Today bench runs as one process (`SingleProcess`, the default everywhere). A distributed launcher
(torchrun: DDP, or FSDP2 for full fine-tuning of large models) plugs in here by implementing
`Launcher` over torch.distributed, and nothing else in the loop changes shape:

- `wrap_model`: the training loop's forward goes through it (DDP/FSDP wrapping; identity today);
  state saves, validation and the checkpoint keep using the unwrapped model.
- `sharded(items)`: the part of a list this rank works on (data-parallel evaluation; each rank
  then `all_gather`s its predictions, and rank 0 puts them back in order).
- `is_main`: rank 0 alone writes the results store, the training state and the checkpoint, and
  logs; the others `barrier()` until it has, then read what it wrote.

A new launcher is one new class here (e.g. `TorchDistributed`, built from the environment torchrun
sets), chosen where the command starts; the loop and the runner take it as a parameter.
"""
from __future__ import annotations

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
    def is_main(self) -> bool: ...

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (a picklable python object), in rank order, on every rank."""

    def wrap_model(self, model: Any) -> Any:
        """The model the training forward runs through (DDP/FSDP-wrapped under a distributed launcher)."""

    def sharded(self, items: Sequence[T]) -> Sequence[T]:
        """This rank's share of `items` (all of them on one process)."""


class SingleProcess:
    """One process, rank 0 of 1: every collective is the identity."""

    rank = 0
    world_size = 1
    is_main = True

    def barrier(self) -> None:
        return None

    def all_gather(self, value: Any) -> list[Any]:
        return [value]

    def wrap_model(self, model: Any) -> Any:
        return model

    def sharded(self, items: Sequence[T]) -> Sequence[T]:
        return items


SINGLE_PROCESS = SingleProcess()  # stateless, so one instance serves every default
