"""Extractive question answering with a span head (AutoModelForQuestionAnswering), SQuAD v2 style.

Follows the Hugging Face question-answering examples (run_qa's prepare_train_features and
utils_qa's postprocess_qa_predictions with version_2_with_negative):

* A (question, context) pair longer than `max_length` is cut into overlapping windows ("features"):
  the question is repeated in every window and the context advances with `doc_stride` tokens of
  overlap, so an answer near a cut is still seen whole by some window.
* Training target per window: the answer's first/last token when the whole answer lies inside the
  window, otherwise token 0 for both ((0, 0): the [CLS] "no answer" position). A window that holds
  only part of the answer must say "no answer": pointing at a truncated span would teach the model
  to predict half answers.
* Prediction per example: the best span over all its windows (start_logit + end_logit, start <= end,
  at most `max_answer_tokens`, inside the context) against the null score, which is the *minimum*
  over windows of start_logit[0] + end_logit[0] (the window most confident that there is an answer
  speaks for the example). The difference null - best is returned as a no-answer score usable as
  SQuAD v2 `na_prob` for the best-threshold search.

Character offsets (fast tokenizers only) map tokens back to the original context, so answers are
cut from the untouched text: casing, accents and spacing survive lower-casing tokenizers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.backends.batching import length_sorted_batches
from harness.errors import BenchError
from harness.progress import progress
from harness.types import Example, TrainItem

# Examples tokenized per call: bounds the peak size of one BatchEncoding on large datasets.
_TOKENIZE_CHUNK = 1000


@dataclass(frozen=True)
class Feature:
    """One window of one example. `offsets[i]` is token i's (start, end) character range in the
    example's context, or None when token i is not a context token (question, specials)."""

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int] | None]


def span_features(tokenizer: Any, examples: Sequence[Example], max_length: int,
                  doc_stride: int) -> list[Feature]:
    """Tokenize every (question, context) pair into overlapping windows of at most `max_length`
    tokens whose contexts overlap by `doc_stride` tokens; features come out grouped by example,
    in example order."""
    if not getattr(tokenizer, "is_fast", False):
        raise BenchError(f"extractive QA needs a fast (Rust) tokenizer for character offsets; "
                         f"{type(tokenizer).__name__} is not one: load the model with a tokenizer.json "
                         "(AutoTokenizer.from_pretrained(..., use_fast=True))")
    if max_length <= 0 or doc_stride < 0 or doc_stride >= max_length:
        raise BenchError(f"extractive QA needs 0 <= doc_stride < max_length (got doc_stride {doc_stride}, "
                         f"max_length {max_length})")
    if not examples:
        return []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < max_length:
        max_length = model_max  # never build windows longer than the model's position table
    for example in examples:
        if len(example.texts) != 2:
            raise BenchError(f"extractive QA example {example.id!r} needs texts=(question, context), "
                             f"got {len(example.texts)} text field(s)")
    # Leading spaces in questions are common in SQuAD and only waste window room.
    questions = [example.texts[0].lstrip() for example in examples]
    contexts = [example.texts[1] for example in examples]
    # Models that pad on the left (XLNet style) were trained with the context first; keep their order.
    context_first = getattr(tokenizer, "padding_side", "right") == "left"
    context_seq = 0 if context_first else 1
    _check_window_room(tokenizer, examples, questions, max_length, doc_stride)

    features: list[Feature] = []
    for chunk_start in range(0, len(examples), _TOKENIZE_CHUNK):
        chunk = slice(chunk_start, chunk_start + _TOKENIZE_CHUNK)
        firsts, seconds = (contexts[chunk], questions[chunk]) if context_first else (questions[chunk], contexts[chunk])
        try:
            encoded = tokenizer(firsts, seconds, truncation="only_first" if context_first else "only_second",
                                max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                                return_offsets_mapping=True, padding=False)
        except Exception as err:  # the Rust tokenizer reports bad window geometry as a bare Exception
            raise BenchError(f"could not cut QA examples into windows of {max_length} tokens with stride "
                             f"{doc_stride}: {err}; raise max_length or lower doc_stride") from err
        types = encoded.get("token_type_ids")
        for row, ids in enumerate(encoded["input_ids"]):
            sequence_ids = encoded.sequence_ids(row)
            offsets: list[tuple[int, int] | None] = [
                (int(span[0]), int(span[1])) if seq == context_seq else None
                for span, seq in zip(encoded["offset_mapping"][row], sequence_ids)]
            if offsets and offsets[0] is not None:
                # Token 0 is the "no answer" target ((0, 0) spans, null score): it must not be context.
                raise BenchError(f"{type(tokenizer).__name__} puts a context token first (no leading [CLS]-like "
                                 "token), so position 0 cannot mean 'no answer'; use a tokenizer whose pair "
                                 "template starts with a special or question token")
            features.append(Feature(
                example_index=chunk_start + int(encoded["overflow_to_sample_mapping"][row]),
                input_ids=list(ids),
                token_type_ids=list(types[row]) if types is not None else None,
                offsets=offsets))
    return features


def _check_window_room(tokenizer: Any, examples: Sequence[Example], questions: Sequence[str],
                       max_length: int, doc_stride: int) -> None:
    """Each window holds specials + question + context; the context part must be longer than the
    stride, else the Rust tokenizer panics (a PanicException, not an Exception) instead of raising."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    for example, length in zip(examples, lengths):
        room = max_length - specials - length
        if room <= doc_stride:
            raise BenchError(f"QA example {example.id!r}: its question takes {length} tokens, leaving {room} of "
                             f"max_length {max_length} for context, not more than doc_stride {doc_stride}; "
                             "raise max_length or lower doc_stride")


def _answer_chars(example: Example) -> tuple[int, int] | None:
    """Character range [start, end) of the first gold answer in the context; None if unanswerable."""
    if not example.references:
        return None
    context, text = example.texts[1], example.references[0]
    # Offsets are authoritative (the text may occur several times); fall back to the first
    # occurrence only for data that carries no offsets.
    start = example.answer_starts[0] if example.answer_starts else context.find(text)
    if start < 0 or start + len(text) > len(context):
        raise BenchError(f"QA example {example.id!r}: answer {text!r} is not inside its context "
                         f"(start {start}, context length {len(context)})")
    return start, start + len(text)


def _window_span(feature: Feature, answer: tuple[int, int] | None) -> tuple[int, int]:
    """Token span of the answer in this window, or (0, 0) when the window does not hold all of it."""
    if answer is None:
        return 0, 0
    start_char, end_char = answer
    context = [(i, span) for i, span in enumerate(feature.offsets) if span is not None]
    if not context or context[0][1][0] > start_char or context[-1][1][1] < end_char:
        return 0, 0  # no context here, or the answer starts before / ends after this window
    # First token ending after the answer starts, last token starting before it ends: robust to
    # answer offsets that fall on whitespace between tokens.
    start = next(i for i, span in context if span[1] > start_char)
    end = next(i for i, span in reversed(context) if span[0] < end_char)
    return (start, end) if start <= end else (0, 0)


def span_train_items(tokenizer: Any, examples: Sequence[Example], max_length: int,
                     doc_stride: int) -> list[TrainItem]:
    """One TrainItem per window: span = the first gold answer's token range when the window holds
    all of it, else (0, 0); unanswerable questions are (0, 0) in every window."""
    answers = [_answer_chars(example) for example in examples]
    return [TrainItem(input_ids=feature.input_ids, token_type_ids=feature.token_type_ids,
                      span=_window_span(feature, answers[feature.example_index]))
            for feature in span_features(tokenizer, examples, max_length, doc_stride)]


def predict_spans(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int, doc_stride: int,
                  batch_size: int, n_best: int = 20, max_answer_tokens: int = 30) -> list[tuple[str, float]]:
    """Per example: (answer text, null_score - best_span_score). The text is "" when the null score
    beats every span; the score is a no-answer proxy (higher = more likely unanswerable), +inf when
    the context has no token at all."""
    import numpy as np
    import torch

    features = span_features(tokenizer, examples, max_length, doc_stride)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logits: list[tuple[Any, Any]] = [(None, None)] * len(features)
    model.eval()
    with torch.inference_mode(), progress("eval", total=len(features), unit="windows") as bar:
        for batch in length_sorted_batches([len(f.input_ids) for f in features], batch_size):
            width = max(len(features[i].input_ids) for i in batch)
            # Right padding keeps position 0 (the null position) at index 0 in every row.
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            types = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(features[i].input_ids)
                ids[row, :n] = torch.tensor(features[i].input_ids)
                mask[row, :n] = 1
                if features[i].token_type_ids is not None:
                    types[row, :n] = torch.tensor(features[i].token_type_ids)
            inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
            if features[batch[0]].token_type_ids is not None:
                inputs["token_type_ids"] = types.to(device)
            out = model(**inputs)
            starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for row, i in enumerate(batch):
                n = len(features[i].input_ids)
                logits[i] = (starts[row, :n], ends[row, :n])
            bar.advance(len(batch))

    by_example: list[list[int]] = [[] for _ in examples]
    for i, feature in enumerate(features):
        by_example[feature.example_index].append(i)
    results: list[tuple[str, float]] = []
    for example, feature_ids in zip(examples, by_example):
        null_score, best_score, best_chars = math.inf, -math.inf, (0, 0)
        for i in feature_ids:
            start_logits, end_logits = logits[i]
            null_score = min(null_score, float(start_logits[0] + end_logits[0]))
            found = _best_span(np, start_logits, end_logits, features[i].offsets, n_best, max_answer_tokens)
            if found is not None and found[0] > best_score:
                best_score, best_chars = found[0], found[1]
        if best_score == -math.inf:
            results.append(("", math.inf))  # an empty context: no span to propose
            continue
        text = "" if null_score > best_score else example.texts[1][best_chars[0]:best_chars[1]]
        results.append((text, null_score - best_score))
    return results


def _best_span(np: Any, start_logits: Any, end_logits: Any, offsets: Sequence[tuple[int, int] | None],
               n_best: int, max_answer_tokens: int) -> tuple[float, tuple[int, int]] | None:
    """Best (score, character range) of a valid span in one window: start <= end, at most
    `max_answer_tokens` tokens, both inside the context. None when the window has no context."""
    in_context = np.array([span is not None for span in offsets])
    if not in_context.any():
        return None
    # Candidates are the top n_best starts and ends among context tokens only (HF takes the top
    # n_best over the whole window, then drops non-context ones, which can leave none).
    starts = np.where(in_context, start_logits, -np.inf)
    ends = np.where(in_context, end_logits, -np.inf)
    k = min(n_best, int(in_context.sum()))
    top_starts = np.argsort(-starts, kind="stable")[:k]
    top_ends = np.argsort(-ends, kind="stable")[:k]
    best: tuple[float, int, int] | None = None
    for s in top_starts:
        for e in top_ends:
            if e < s or e - s + 1 > max_answer_tokens:
                continue
            score = float(starts[s] + ends[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    if best is None:
        # Every top end came before every top start: search all valid pairs (context is contiguous,
        # so a band of width max_answer_tokens over its tokens covers them).
        context_ids = np.flatnonzero(in_context)
        for s in context_ids:
            stop = min(s + max_answer_tokens, context_ids[-1] + 1)
            e = s + int(np.argmax(ends[s:stop]))
            score = float(starts[s] + ends[e])
            if best is None or score > best[0]:
                best = (score, int(s), int(e))
    assert best is not None
    _, s, e = best
    return best[0], (offsets[s][0], offsets[e][1])  # type: ignore[index]
