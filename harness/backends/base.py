"""The backend contract: typed requests in, typed responses out, one list per call.

A kind turns examples into requests (token ids made with the backend's tokenizer, so truncation
and chat templates stay the kind's business); a backend answers a whole list at once, in the
order given, and chooses its own batching (length sorting, prefix sharing, out-of-memory
halving). That is all a new engine needs to provide: vLLM answers the same lists with prompt
log-probs and `generate`, a data-parallel wrapper shards a list across ranks and gathers the
answers back in order, and a scripted backend answers tests without a model.

Methods a backend's model cannot serve (generation from a span head, say) raise
`Unsupported`; the kinds only ask what their stage's model has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

Tokens = tuple[int, ...]


class Unsupported(NotImplementedError):
    """The backend's model cannot answer this kind of request (e.g. generation from a span head)."""


@dataclass(frozen=True)
class Loglikelihood:
    """log P(continuation | context) for each of an example's continuations: the label verbalizers
    of a classification prompt, the choices of a multiple-choice question, or (one continuation)
    a reference answer whose perplexity is measured. For seq2seq models the context is the
    encoder input and each continuation a decoder target."""

    context: Tokens
    continuations: tuple[Tokens, ...]


@dataclass(frozen=True)
class RollingLoglikelihood:
    """The whole document scored token by token (every token after the first exactly once), in
    windows of up to `max_length` tokens advancing by `stride`: language-model perplexity."""

    tokens: Tokens
    max_length: int
    stride: int


@dataclass(frozen=True)
class Generation:
    """Continue the prompt for up to `max_new_tokens`, cut at the first `stop` string; greedy when
    `temperature` is 0, else sampled with `seed`."""

    prompt: Tokens
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class HeadScores:
    """Class probabilities from a sequence-classification head over the text(s) (a pair goes in as
    a sentence pair), truncated to `max_length` tokens."""

    texts: tuple[str, ...]
    max_length: int


@dataclass(frozen=True)
class SpanQuery:
    """Extractive QA: the best answer span in `context`, over windows of `max_length` tokens
    overlapping by `doc_stride`, or no answer."""

    question: str
    context: str
    max_length: int
    doc_stride: int
    max_answer_tokens: int = 30
    id: str = ""  # the example's id, which an error about this query names


@dataclass(frozen=True)
class TokenLoglikelihood:
    """A scored token sequence: summed log-probability and how many tokens it covers."""

    logprob: float
    tokens: int


@dataclass(frozen=True)
class Span:
    """An extracted answer ("" = no answer) and its no-answer score (null minus best span score;
    higher: more likely unanswerable; +inf when the context has no token)."""

    text: str
    null_score: float


@runtime_checkable
class Backend(Protocol):
    """What the evaluation stages call. `tokenizer` is the Hugging Face tokenizer the requests'
    token ids come from; `seq2seq` says whether contexts are encoder inputs; `batch_size` is the
    batch the backend last ran with (after any out-of-memory halving), for the stage's record."""

    tokenizer: Any
    seq2seq: bool
    batch_size: int

    def loglikelihood(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        """Per request, the summed log-probability of each continuation (its tokens only)."""
        ...

    def rolling_loglikelihood(self, requests: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
        ...

    def generate(self, requests: Sequence[Generation]) -> list[str]:
        ...

    def head_scores(self, requests: Sequence[HeadScores]) -> list[tuple[float, ...]]:
        ...

    def extract_spans(self, requests: Sequence[SpanQuery]) -> list[Span]:
        ...
