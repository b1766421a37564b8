"""A scripted backend: answers every request of the Backend contract from rules, without a model.

For tests (as inspect_ai's mockllm answers `generate` with a default text or a scripted list of
outputs): a kind's requests go in, scripted responses come out, and every request is kept, in
order, so a test can assert exactly what a kind asked (`backend.requests`) and in how many calls
(`backend.calls`). Rules are a fixed answer, a list of answers consumed one per request, or a
function of the request; the defaults make every method answer something sensible:

    generate              "scripted output"
    loglikelihood         each continuation scores `token_logprob` per token, unless a mapping
                          {continuation text (stripped): score} or a function says otherwise
    rolling_loglikelihood every token after the first at `token_logprob`
    head_scores           uniform over `num_labels`
    extract_spans         no answer (null score 0.0)

The tokenizer is any Hugging Face tokenizer (a tiny real one in tests), or the whitespace
tokenizer below, which needs nothing installed.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar, Union

from harness.backends.base import (
    Generation,
    HeadScores,
    Loglikelihood,
    RollingLoglikelihood,
    Span,
    SpanQuery,
    TokenLoglikelihood,
)

DEFAULT_OUTPUT = "scripted output"
Request = TypeVar("Request")
Answer = TypeVar("Answer")
# A rule: one answer for every request, a list answered in order, or a function of the request.
Rule = Union[Answer, Sequence[Answer], Callable[[Request], Answer]]


class WhitespaceTokenizer:
    """Words -> stable ids (a hash, so the same word has the same id in every process), in the
    call shape kinds use: `tok(text or texts, add_special_tokens=...)["input_ids"]`, `decode`.
    Special tokens: pad 0, eos 1; nothing is added to a text (like GPT-2's tokenizer)."""

    pad_token_id = 0
    eos_token_id = 1
    pad_token = "<pad>"
    eos_token = "</s>"
    chat_template = None
    VOCAB = 50_000

    def __init__(self) -> None:
        self._words: dict[int, str] = {self.pad_token_id: self.pad_token, self.eos_token_id: self.eos_token}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            token = 2 + zlib.crc32(word.encode("utf-8")) % self.VOCAB
            self._words[token] = word
            ids.append(token)
        return ids

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True, **_: Any) -> dict[str, Any]:
        if isinstance(text, str):
            return {"input_ids": self.encode(text)}
        return {"input_ids": [self.encode(t) for t in text]}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        special = (self.pad_token_id, self.eos_token_id)
        return " ".join(self._words.get(int(i), "<unk>") for i in ids
                        if not (skip_special_tokens and int(i) in special))


class ScriptedBackend:
    """The Backend protocol answered by rules (see the module docstring); records every request."""

    def __init__(self, *, tokenizer: Any = None, seq2seq: bool = False, batch_size: int = 8,
                 generate: Rule[str, Generation] = DEFAULT_OUTPUT,
                 loglikelihood: Callable[[Loglikelihood], Sequence[float]] | Mapping[str, float] | None = None,
                 rolling: Callable[[RollingLoglikelihood], TokenLoglikelihood] | None = None,
                 head_scores: Rule[Sequence[float], HeadScores] | None = None,
                 spans: Rule[Span, SpanQuery] = Span("", 0.0),
                 token_logprob: float = -1.0, num_labels: int = 2) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else WhitespaceTokenizer()
        self.seq2seq = seq2seq
        self.batch_size = batch_size
        self.token_logprob = token_logprob
        self.requests: list[Any] = []  # every request received, in order, across all calls
        self.calls: list[tuple[str, int]] = []  # (method, number of requests) per call
        self._generate = _answerer(generate, str)
        self._loglikelihood = loglikelihood
        self._rolling = rolling
        self._head = _answerer(head_scores if head_scores is not None else (1.0 / num_labels,) * num_labels, tuple)
        self._spans = _answerer(spans, Span)

    def of_type(self, request_type: type) -> list[Any]:
        """The requests of one type received so far (e.g. `backend.of_type(Loglikelihood)`)."""
        return [request for request in self.requests if isinstance(request, request_type)]

    def _record(self, method: str, requests: Sequence[Any]) -> None:
        self.calls.append((method, len(requests)))
        self.requests.extend(requests)

    def loglikelihood(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        self._record("loglikelihood", requests)
        return [tuple(float(s) for s in self._continuation_scores(r)) for r in requests]

    def _continuation_scores(self, request: Loglikelihood) -> Sequence[float]:
        if callable(self._loglikelihood):
            scores = self._loglikelihood(request)
            if len(scores) != len(request.continuations):
                raise ValueError(f"scripted loglikelihood gave {len(scores)} scores for "
                                 f"{len(request.continuations)} continuations")
            return scores
        table = self._loglikelihood or {}
        texts = [self.tokenizer.decode(list(c)).strip() for c in request.continuations]
        return [table.get(text, self.token_logprob * len(c)) for text, c in zip(texts, request.continuations)]

    def rolling_loglikelihood(self, requests: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
        self._record("rolling_loglikelihood", requests)
        if self._rolling is not None:
            return [self._rolling(r) for r in requests]
        scored = [max(0, len(r.tokens) - 1) for r in requests]  # every token after the first, once
        return [TokenLoglikelihood(self.token_logprob * n, n) for n in scored]

    def generate(self, requests: Sequence[Generation]) -> list[str]:
        self._record("generate", requests)
        return [_cut(self._generate(r), r.stop) for r in requests]

    def head_scores(self, requests: Sequence[HeadScores]) -> list[tuple[float, ...]]:
        self._record("head_scores", requests)
        return [tuple(float(p) for p in self._head(r)) for r in requests]

    def extract_spans(self, requests: Sequence[SpanQuery]) -> list[Span]:
        self._record("extract_spans", requests)
        return [self._spans(r) for r in requests]


def _answerer(rule: Any, single: type) -> Callable[[Any], Any]:
    """A rule as a function of the request: a fixed answer (an instance of `single`), answers
    consumed one per request (an error when they run out), or the function itself."""
    if callable(rule) and not isinstance(rule, single):
        return rule
    if isinstance(rule, single) or (single is tuple and _is_flat_numbers(rule)):
        return lambda _request: rule
    queue: Iterator[Any] = iter(list(rule))

    def next_answer(request: Any) -> Any:
        try:
            return next(queue)
        except StopIteration:
            raise ValueError(f"scripted backend ran out of answers at {type(request).__name__} request "
                             f"{request!r:.80}; script more") from None

    return next_answer


def _is_flat_numbers(rule: Any) -> bool:
    return isinstance(rule, (list, tuple)) and all(isinstance(v, (int, float)) for v in rule)


def _cut(text: str, stop: Sequence[str]) -> str:
    """Generation stops at the first stop string, as a real backend's does."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text
