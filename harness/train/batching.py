"""How the training items become batches and optimizer steps.

The arithmetic, for --batch-size B, --grad-accum A and N items over E epochs:
  batches per epoch = ceil(N / B); optimizer steps per epoch = ceil(batches / A) (an epoch's last
  step may gather fewer than A batches: epochs never spill into each other);
  total steps = ceil(steps per epoch x E); tokens per optimizer step = B x A x mean length (real
  tokens: a batch pads only to its own longest row, and length grouping keeps that close to the rest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

from harness.options import RunConfig

T = TypeVar("T")


@dataclass(frozen=True)
class StepPlan:
    """The loop's counts, fixed before the first step; the validation clock is `validates_at`."""

    batches_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int  # optimizer steps between validations (and mid-training state saves)

    @classmethod
    def of(cls, items: int, config: RunConfig) -> "StepPlan":
        batches_per_epoch = math.ceil(items / config.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
        total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
        evaluations = max(1, round(config.epochs * config.evals_per_epoch))
        return cls(batches_per_epoch, total_steps, int(config.warmup_ratio * total_steps),
                   max(1, math.ceil(total_steps / evaluations)))

    def validates_at(self, step: int) -> bool:
        """A validation after every `eval_every` steps, and always after the last one."""
        return step % self.eval_every == 0 or step == self.total_steps


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle, sort within windows of 50 batches by length, then shuffle the batch order:
    batches pad little yet the data order stays random."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [list(map(int, chunk[i:i + batch_size])) for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(batch: Sequence[T], pieces: int) -> list[Sequence[T]]:
    """The batch in `pieces` runs of ceil(len / pieces) examples (the last may be shorter): what
    runs per forward pass once the device has run out of memory on the whole batch."""
    size = math.ceil(len(batch) / pieces)
    return [batch[start:start + size] for start in range(0, len(batch), size)]
