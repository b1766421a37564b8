"""A backend over several processes: each rank answers its shard of a request list, and every
rank gets all the answers back in the list's order. Wraps any backend (Hugging Face, vLLM with
one replica per rank, a scripted one), since the contract is lists in, lists out. A kind sorts
its requests by length before it asks (or not: then the shard keeps the list's order); the strided
shard of a length-sorted list is length-sorted too, and spreads long and short ones over the ranks."""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from harness.backends.base import (Backend, Generation, HeadScores, Loglikelihood, RollingLoglikelihood, Span,
                                   SpanQuery, TokenLoglikelihood)
from harness.distributed import Launcher, Replicas

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class DataParallel:
    """`inner` answers this rank's strided shard; the answers are all-gathered in order. Every rank
    must make the same calls in the same order (they do: every rank runs the same stage)."""

    def __init__(self, inner: Backend, ranks: Launcher | Replicas):
        self.inner, self.ranks = inner, ranks

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def seq2seq(self) -> bool:
        return self.inner.seq2seq

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    def _sharded(self, answer: Callable[[list[Request]], list[Answer]], requests: Sequence[Request]) -> list[Answer]:
        mine = [requests[i] for i in self.ranks.shard(len(requests))]
        return self.ranks.gather_in_order(len(requests), answer(mine) if mine else [])

    def loglikelihood(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        return self._sharded(self.inner.loglikelihood, requests)

    def rolling_loglikelihood(self, requests: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
        return self._sharded(self.inner.rolling_loglikelihood, requests)

    def generate(self, requests: Sequence[Generation]) -> list[str]:
        return self._sharded(self.inner.generate, requests)

    def head_scores(self, requests: Sequence[HeadScores]) -> list[tuple[float, ...]]:
        return self._sharded(self.inner.head_scores, requests)

    def extract_spans(self, requests: Sequence[SpanQuery]) -> list[Span]:
        return self._sharded(self.inner.extract_spans, requests)


def fsdp_sharded(model: Any) -> bool:
    """Whether FSDP2 (`fully_shard`) sharded the model's weights over the ranks: it swaps the
    module's class for an `FSDP...` subclass, and its forward then gathers weights from every rank."""
    return type(model).__name__.startswith("FSDP")
