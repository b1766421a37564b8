"""Hugging Face backend: score label continuations and run classification heads, batched;
`HFBackend` answers the Backend contract (backends/base.py) with these and generate.py/qa_span.py.

Scoring contract (after lm-evaluation-harness's loglikelihood, made cheaper): for each prompt and
each label verbalizer, log P(verbalizer | prompt) summed over its tokens. One forward pass per
prompt reads every label's first token at the last position (only that position's logits are
computed: `logits_to_keep=1`, never a [B, T, V] log-softmax). Labels of more than one token
continue from the prompt's KV cache, several labels per short pass (the batch repeated once per
label), so the prompt is never re-encoded.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence, TypeVar

from harness.backends.base import (Generation, HeadScores, Loglikelihood, RollingLoglikelihood, Span, SpanQuery,
                                   TokenLoglikelihood, Tokens)
from harness.backends.batching import length_sorted_batches, pad_batch
from harness.backends.generate import generate_batched, rolling_nll, target_nll
from harness.backends.precision import autocast
from harness.backends.qa_span import predict_spans
from harness.errors import BenchError
from harness.faults import reached
from harness.progress import progress
from harness.types import Example, TrainItem

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")
A = TypeVar("A")


def score_causal(model: Any, contexts: Sequence[list[int]], choices: Sequence[list[int]], pad_id: int,
                 batch_size: int, *, share_prefix: bool = True) -> list[list[float]]:
    """log P(choice | context) for every context x choice, with a shared KV cache per batch.

    When every context starts with the same tokens (few-shot demonstrations), that prefix is
    encoded once and its KV cache is copied into each batch: only the example and the labels are
    computed per example. Causal attention makes the prefix's keys and values independent of what
    follows, so the scores are the same (up to float rounding)."""
    import torch

    device = next(model.parameters()).device
    scores: list[list[float]] = [[] for _ in contexts]
    multi_token = [j for j, choice in enumerate(choices) if len(choice) > 1]
    first_ids = torch.tensor([choice[0] for choice in choices], device=device)
    cache_arg = _cache_argument(model)
    shared = shared_prefix_length(contexts) if share_prefix else 0
    model.eval()
    with torch.inference_mode(), progress("eval", total=len(contexts), unit="ex") as bar:
        prefix_cache = None
        if shared >= MIN_SHARED_PREFIX:
            out = model(input_ids=torch.tensor([contexts[0][:shared]], device=device), use_cache=True,
                        logits_to_keep=1)
            prefix_cache = getattr(out, cache_arg)
        else:
            shared = 0
        for batch in length_sorted_batches([len(c) for c in contexts], batch_size):
            ids, mask = pad_batch([contexts[i][shared:] for i in batch], pad_id, left=True, device=device)
            positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
            extra: dict[str, Any] = {}
            if prefix_cache is not None:  # [prefix | left pads | example]: pads masked, positions contiguous
                batch_cache = copy.deepcopy(prefix_cache)
                batch_cache.batch_repeat_interleave(len(batch))
                extra = {cache_arg: batch_cache}
                mask = torch.cat([mask.new_ones(len(batch), shared), mask], dim=1)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        use_cache=bool(multi_token) or prefix_cache is not None, logits_to_keep=1, **extra)
            last = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            batch_scores = last[:, first_ids].clone()  # [B, K]: first token of every label
            if multi_token:
                _add_continuations(model, cache_arg, getattr(out, cache_arg), mask, positions[:, -1:] + 1,
                                   [choices[j] for j in multi_token], multi_token, batch_scores)
            for i, row_scores in zip(batch, batch_scores.tolist()):  # one device-to-host copy per batch
                scores[i] = row_scores
            bar.advance(len(batch))
    return scores


# Below this many shared tokens, copying the prefix cache per batch saves less than it costs.
MIN_SHARED_PREFIX = 16
# Rows per continuation pass: a pass over a few rows costs about as much as reading the weights once,
# so labels share passes up to this many rows (their copies of the prompt cache bound it above).
CONTINUATION_ROWS = 64


def _add_continuations(model: Any, cache_arg: str, cache: Any, mask: Any, next_position: Any,
                       labels: Sequence[list[int]], columns: Sequence[int], batch_scores: Any) -> None:
    """Add log P(tokens 2..n | prompt, token 1) of each multi-token label to its score column.

    Labels go in groups of up to CONTINUATION_ROWS // batch rows: the group's rows repeat the batch
    once per label over a copy of the prompt cache, each label's tokens right-padded to the group's
    longest (padding follows the real tokens, so causal attention keeps it out of their scores). A
    group of one label reuses the cache itself and crops it back afterwards."""
    import torch

    rows, device = mask.shape[0], mask.device
    per_pass = max(1, CONTINUATION_ROWS // rows)
    for start in range(0, len(labels), per_pass):
        group = labels[start:start + per_pass]
        k, steps = len(group), max(len(label) for label in group) - 1
        last = start + per_pass >= len(labels)
        group_cache = cache if k == 1 or last else copy.deepcopy(cache)
        if k > 1:
            group_cache.batch_repeat_interleave(k)  # row r * k + i: batch row r, label i
        feed = torch.zeros((k, steps), dtype=torch.long)
        for i, label in enumerate(group):
            feed[i, :len(label) - 1] = torch.tensor(label[:-1])  # tokens 0..n-2 predict tokens 1..n-1
        out = model(input_ids=feed.to(device).repeat(rows, 1), **{cache_arg: group_cache}, use_cache=True,
                    attention_mask=torch.cat([mask.repeat_interleave(k, 0), mask.new_ones(rows * k, steps)], dim=1),
                    position_ids=next_position.repeat_interleave(k, 0) + torch.arange(steps, device=device))
        logp = torch.log_softmax(out.logits.float(), dim=-1).view(rows, k, steps, -1)
        for i, label in enumerate(group):
            targets = torch.tensor(label[1:], device=device).expand(rows, -1).unsqueeze(-1)
            batch_scores[:, columns[start + i]] += logp[:, i, :len(label) - 1].gather(-1, targets).squeeze(-1).sum(-1)
        if k == 1 and not last:
            cache.crop(-steps)  # negative = tokens to drop; both old and new transformers agree


def shared_prefix_length(contexts: Sequence[Sequence[int]]) -> int:
    """Tokens every context starts with, leaving each at least one token of its own (whose logits
    are the ones read)."""
    if len(contexts) < 2:
        return 0
    first, length = contexts[0], min(len(c) for c in contexts) - 1
    for context in contexts[1:]:
        common = 0
        while common < length and context[common] == first[common]:
            common += 1
        length = common
        if not length:
            break
    return max(0, length)


def _cache_argument(model: Any) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (argument and output field)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrappers take **kwargs
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def score_seq2seq(model: Any, contexts: Sequence[list[int]], choices: Sequence[list[int]], pad_id: int,
                  batch_size: int) -> list[list[float]]:
    """Encoder-decoder scoring: encode each prompt once, decode every label against it."""
    import torch

    device = next(model.parameters()).device
    scores: list[list[float]] = [[] for _ in contexts]
    model.eval()
    with torch.inference_mode(), progress("eval", total=len(contexts), unit="ex") as bar:
        for batch in length_sorted_batches([len(c) for c in contexts], batch_size):
            ids, mask = pad_batch([contexts[i] for i in batch], pad_id, left=False, device=device)
            encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
            batch_scores = torch.zeros((len(batch), len(choices)), device=device)
            for j, choice in enumerate(choices):
                labels = torch.tensor(choice, device=device).repeat(len(batch), 1)
                out = model(encoder_outputs=encoded, attention_mask=mask, labels=labels)
                logp = torch.log_softmax(out.logits.float(), dim=-1)
                batch_scores[:, j] = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
            for i, row_scores in zip(batch, batch_scores.tolist()):  # one device-to-host copy per batch
                scores[i] = row_scores
            bar.advance(len(batch))
    return scores


def classify_with_head(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int,
                       batch_size: int) -> list[list[float]]:
    """Class probabilities from a sequence-classification head (pairs go in as sentence pairs)."""
    import torch

    device = next(model.parameters()).device
    encoded, segments = encode_for_head(tokenizer, examples, max_length)
    probabilities: list[list[float]] = [[] for _ in examples]
    model.eval()
    with torch.inference_mode(), progress("eval", total=len(examples), unit="ex") as bar:
        for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
            features = {"input_ids": [encoded[i] for i in batch]}
            if segments is not None:
                features["token_type_ids"] = [segments[i] for i in batch]
            padded = {name: tensor.to(device) for name, tensor in tokenizer.pad(features, return_tensors="pt").items()}
            logits = model(**padded).logits
            probs = torch.softmax(logits.float(), dim=-1)
            for i, row_probabilities in zip(batch, probs.tolist()):  # one device-to-host copy per batch
                probabilities[i] = row_probabilities
            bar.advance(len(batch))
    return probabilities


def encode_for_head(tokenizer: Any, examples: Sequence[Example], max_length: int
                    ) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids for a classification head (one text, or a truncated sentence pair; no padding),
    and a pair's segment ids where the tokenizer makes them (BERT: 0 for the first text, 1 for the
    second), as the model was pretrained and as plain transformers would call it; else None."""
    # lazy: keeps numpy out of `bench --help`
    from harness.task.prompts import ENCODE_CHUNK

    pairs = len(examples[0].texts) > 1
    ids: list[list[int]] = []
    segments: list[list[int]] | None = [] if pairs else None
    # chunk by chunk: one call would hold every whole text's encoding before truncation (ENCODE_CHUNK)
    for start in range(0, len(examples), ENCODE_CHUNK):
        chunk = examples[start:start + ENCODE_CHUNK]
        encoded = tokenizer([e.texts[0] for e in chunk], [e.texts[1] for e in chunk] if pairs else None,
                            truncation=True, max_length=max_length)
        ids += encoded["input_ids"]
        if segments is not None and "token_type_ids" in encoded:
            segments += encoded["token_type_ids"]
        else:  # one text, or a tokenizer that makes no segment ids
            segments = None
    return ids, segments


class HFBackend:
    """The Backend contract over a loaded Hugging Face model: each call answers a whole list of
    requests (in their order) with the functions above, which sort by length and batch; requests
    that share one set of continuations (a classification prompt's verbalizers) go through one
    scoring call, so they also share a few-shot prefix's KV cache. Out of device memory, a call
    halves `batch_size` and runs again; `batch_size` afterwards is what the stage records."""

    def __init__(self, model: Any, tokenizer: Any, seq2seq: bool, batch_size: int, precision: str = "fp32",
                 device: Any = None) -> None:
        self.model, self.tokenizer, self.seq2seq = model, tokenizer, seq2seq
        self.batch_size, self.precision = batch_size, precision
        self.device = device if device is not None else next(model.parameters()).device

    def _run(self, work: Callable[[int], T]) -> T:
        """work(batch size) under the run's autocast; out of memory: halve the batch and run it again."""
        import torch

        while True:
            try:
                reached("eval-batch", self.batch_size)
                with autocast(self.precision, self.device):
                    return work(self.batch_size)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise BenchError("out of memory evaluating one example at a time; lower --max-length") from None
                self.batch_size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def loglikelihood(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        if requests and all(len(r.continuations) == 1 for r in requests):
            return self._single_continuations(requests)
        scorer = score_seq2seq if self.seq2seq else score_causal

        def answer(choices: tuple[Tokens, ...], group: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
            contexts, labels = [list(r.context) for r in group], [list(c) for c in choices]
            rows = self._run(lambda batch: scorer(self.model, contexts, labels, self.tokenizer.pad_token_id, batch))
            return [tuple(row) for row in rows]

        return _grouped(requests, lambda r: r.continuations, answer)

    def _single_continuations(self, requests: Sequence[Loglikelihood]) -> list[tuple[float, ...]]:
        """One continuation each (a reference answer): teacher-forced over context + continuation,
        the log-softmax at the continuation's positions only, at half the batch (whole sequences)."""
        if self.seq2seq:
            items = [TrainItem(list(r.context), lm_labels=list(r.continuations[0])) for r in requests]
        else:
            items = [TrainItem(list(r.context) + list(r.continuations[0]),
                               lm_labels=[-100] * len(r.context) + list(r.continuations[0])) for r in requests]
        found = self._run(lambda batch: target_nll(self.model, items, pad_id=self.tokenizer.pad_token_id,
                                                   batch_size=max(1, batch // 2), seq2seq=self.seq2seq))
        return [(-nll,) for nll, _ in found]

    def rolling_loglikelihood(self, requests: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
        def answer(key: tuple[int, int], group: Sequence[RollingLoglikelihood]) -> list[TokenLoglikelihood]:
            documents = [list(r.tokens) for r in group]
            found = self._run(lambda batch: rolling_nll(self.model, documents, max_length=key[0], stride=key[1],
                                                        batch_size=batch))
            return [TokenLoglikelihood(-nll, count) for nll, count in found]

        return _grouped(requests, lambda r: (r.max_length, r.stride), answer)

    def generate(self, requests: Sequence[Generation]) -> list[str]:
        def answer(key: tuple[Any, ...], group: Sequence[Generation]) -> list[str]:
            new_tokens, stop, temperature, seed = key
            prompts = [list(r.prompt) for r in group]
            return self._run(lambda batch: generate_batched(
                self.model, self.tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch, stop=stop,
                seq2seq=self.seq2seq, temperature=temperature, seed=seed))

        return _grouped(requests, lambda r: (r.max_new_tokens, r.stop, r.temperature, r.seed), answer)

    def head_scores(self, requests: Sequence[HeadScores]) -> list[tuple[float, ...]]:
        def answer(max_length: int, group: Sequence[HeadScores]) -> list[tuple[float, ...]]:
            examples = [Example(id="", texts=r.texts) for r in group]
            rows = self._run(lambda batch: classify_with_head(self.model, self.tokenizer, examples, max_length, batch))
            return [tuple(row) for row in rows]

        return _grouped(requests, lambda r: r.max_length, answer)

    def extract_spans(self, requests: Sequence[SpanQuery]) -> list[Span]:
        def answer(key: tuple[int, int, int], group: Sequence[SpanQuery]) -> list[Span]:
            max_length, stride, answer_tokens = key
            examples = [Example(id=r.id, texts=(r.question, r.context)) for r in group]
            found = self._run(lambda batch: predict_spans(self.model, self.tokenizer, examples, max_length, stride,
                                                          batch, max_answer_tokens=answer_tokens))
            return [Span(text, score) for text, score in found]

        return _grouped(requests, lambda r: (r.max_length, r.doc_stride, r.max_answer_tokens), answer)


def _grouped(requests: Sequence[R], key: Callable[[R], K], answer: Callable[[K, Sequence[R]], Sequence[A]]) -> list[A]:
    """Requests that share a key answered together (one call per key), the answers in request order."""
    groups: dict[K, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(key(request), []).append(i)
    answers: list[Any] = [None] * len(requests)
    for shared, indices in groups.items():
        for i, found in zip(indices, answer(shared, [requests[i] for i in indices])):
            answers[i] = found
    return answers
