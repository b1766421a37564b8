"""Extractive QA windows, span targets and post-processing, on the tiny BERT with its real tokenizer."""
from __future__ import annotations

import math
import re
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest

from harness.backends.qa_span import predict_spans, span_features, span_train_items
from harness.errors import BenchError
from harness.types import Example

MAX_LENGTH, STRIDE = 64, 16
QUESTION = "Who won the prize?"
ANSWER = "the blue team"
# ~40 numbered sentences: many times max_length tokens; the answer sits in the last sentence.
LONG_CONTEXT = " ".join(f"Yesterday the dog number {i} played in the park with a ball." for i in range(40)) + \
    f" The winner of the prize was {ANSWER} from the north."


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def example(question: str = QUESTION, context: str = LONG_CONTEXT, answer: str | None = ANSWER,
            start: int | None = None, id: str = "q") -> Example:
    if answer is None:
        return Example(id=id, texts=(question, context))
    return Example(id=id, texts=(question, context), references=(answer,),
                   answer_starts=(context.rindex(answer) if start is None else start,))


def context_chars(offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
    """Character range of the context a window holds."""
    spans = [span for span in offsets if span is not None]
    return spans[0][0], spans[-1][1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model("bert"))


@pytest.fixture
def qa_model(tiny_model: Any) -> Any:
    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    torch.manual_seed(0)  # the qa_outputs head is freshly initialised
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized weights" notice
    try:
        return AutoModelForQuestionAnswering.from_pretrained(tiny_model("bert")).eval()
    finally:
        hf_logging.set_verbosity(verbosity)


def test_long_context_windows_and_answer_span(tokenizer: Any) -> None:
    ex = example()
    features = span_features(tokenizer, [ex], MAX_LENGTH, STRIDE)
    items = span_train_items(tokenizer, [ex], MAX_LENGTH, STRIDE)
    assert len(features) == len(items) >= 5
    assert all(len(f.input_ids) <= MAX_LENGTH and f.example_index == 0 for f in features)
    # Windows tile the context in order, overlapping, from its first to its last character.
    ranges = [context_chars(f.offsets) for f in features]
    assert ranges[0][0] == 0 and ranges[-1][1] == len(LONG_CONTEXT)
    assert all(b[0] < a[1] for a, b in pairwise(ranges))  # consecutive windows overlap

    answer_start = LONG_CONTEXT.rindex(ANSWER)
    answer_end = answer_start + len(ANSWER)
    holding = [i for i, (lo, hi) in enumerate(ranges) if lo <= answer_start and answer_end <= hi]
    assert holding and holding[-1] == len(features) - 1  # near the end: the last window holds it
    for i, (feature, item) in enumerate(zip(features, items)):
        assert item.input_ids == feature.input_ids
        if i not in holding:
            assert item.span == (0, 0), i
            continue
        start, end = item.span  # type: ignore[misc]
        assert 0 < start <= end
        # The span is exactly the answer: cut by offsets from the context, and decoded from the tokens.
        assert LONG_CONTEXT[feature.offsets[start][0]:feature.offsets[end][1]] == ANSWER  # type: ignore[index]
        assert normalise(tokenizer.decode(feature.input_ids[start:end + 1])) == normalise(ANSWER)
    assert sum(item.span == (0, 0) for item in items) >= 3


def test_answer_crossing_a_window_boundary(tokenizer: Any) -> None:
    features = span_features(tokenizer, [example(answer=None)], MAX_LENGTH, STRIDE)
    first_end = context_chars(features[0].offsets)[1]
    # Whole words from a little before window 0's last character to a little after it.
    start = LONG_CONTEXT.rindex(" ", 0, first_end - 12) + 1
    end = LONG_CONTEXT.index(" ", first_end + 8)
    answer = LONG_CONTEXT[start:end]
    items = span_train_items(tokenizer, [example(answer=answer, start=start)], MAX_LENGTH, STRIDE)
    assert items[0].span == (0, 0)  # window 0 holds only the answer's head
    lo, hi = context_chars(features[1].offsets)
    assert lo <= start and end <= hi  # the overlap gives window 1 all of it
    s, e = items[1].span  # type: ignore[misc]
    assert LONG_CONTEXT[features[1].offsets[s][0]:features[1].offsets[e][1]] == answer  # type: ignore[index]
    assert all(item.span == (0, 0) for item in items[2:])


def test_unanswerable_is_null_in_every_window(tokenizer: Any) -> None:
    items = span_train_items(tokenizer, [example(answer=None)], MAX_LENGTH, STRIDE)
    assert len(items) > 1 and all(item.span == (0, 0) for item in items)


def test_left_padding_tokenizer_puts_context_first(tokenizer: Any) -> None:
    import copy

    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    features = span_features(left, [example()], MAX_LENGTH, STRIDE)
    items = span_train_items(left, [example()], MAX_LENGTH, STRIDE)
    assert len(features) > 1
    assert features[0].offsets[0] is None and features[0].offsets[1] == (0, len("Yesterday"))
    s, e = items[-1].span  # type: ignore[misc]
    assert LONG_CONTEXT[features[-1].offsets[s][0]:features[-1].offsets[e][1]] == ANSWER  # type: ignore[index]


def test_bad_inputs_raise_bench_errors(tokenizer: Any) -> None:
    with pytest.raises(BenchError, match="fast"):
        span_features(SimpleNamespace(is_fast=False), [example()], MAX_LENGTH, STRIDE)
    # A stride that leaves no room would make the Rust tokenizer panic; we refuse it first.
    with pytest.raises(BenchError, match="doc_stride"):
        span_features(tokenizer, [example(question="what " * 50)], MAX_LENGTH, STRIDE)
    with pytest.raises(BenchError, match="not inside"):
        span_train_items(tokenizer, [example(start=len(LONG_CONTEXT) - 3)], MAX_LENGTH, STRIDE)
    assert span_train_items(tokenizer, [], MAX_LENGTH, STRIDE) == []


def test_predict_spans_shape_and_batching(tokenizer: Any, qa_model: Any) -> None:
    examples = [example(id="long"), example(id="none", answer=None),
                example(id="short", question="What did the dog chase?", context="The dog chased the red ball.",
                        answer="the red ball")]
    one = predict_spans(qa_model, tokenizer, examples, MAX_LENGTH, STRIDE, batch_size=1)
    many = predict_spans(qa_model, tokenizer, examples, MAX_LENGTH, STRIDE, batch_size=8)
    assert len(one) == len(examples)
    for ex, (text, score), (text8, score8) in zip(examples, one, many):
        assert isinstance(text, str) and isinstance(score, float) and math.isfinite(score)
        assert text == "" or text in ex.texts[1]
        assert (text == "") == (score > 0)  # "" exactly when the null score beats the best span
        assert text8 == text and score8 == pytest.approx(score, abs=1e-4)  # padding changes nothing


class ScriptedQA:
    """A stand-in QA model whose logits for each window are given: tests the post-processing alone."""

    def __init__(self, logits: dict[tuple[int, ...], tuple[list[float], list[float]]]) -> None:
        import torch

        self.logits, self.weight = logits, torch.nn.Parameter(torch.zeros(1))

    def parameters(self) -> Any:
        return iter([self.weight])

    def eval(self) -> ScriptedQA:
        return self

    def __call__(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        import torch

        start = torch.zeros(input_ids.shape)
        end = torch.zeros(input_ids.shape)
        for row in range(input_ids.shape[0]):
            n = int(attention_mask[row].sum())
            s, e = self.logits[tuple(input_ids[row, :n].tolist())]
            start[row, :n], end[row, :n] = torch.tensor(s), torch.tensor(e)
        return SimpleNamespace(start_logits=start, end_logits=end)


def test_post_processing_combines_windows(tokenizer: Any) -> None:
    ex = example(answer=None)
    features = span_features(tokenizer, [ex], MAX_LENGTH, STRIDE)
    assert len(features) >= 3 and sum(f.offsets.count(None) < len(f.offsets) - 30 for f in features) >= 2

    def script(null0: float, span0: float) -> ScriptedQA:
        logits = {}
        for i, f in enumerate(features):
            # Low everywhere, so only the tokens named below can make a candidate span.
            s, e = [-100.0] * len(f.input_ids), [-100.0] * len(f.input_ids)
            ctx = [t for t, span in enumerate(f.offsets) if span is not None]
            s[1] = e[1] = 50.0  # a question token: never an answer
            if len(ctx) > 30:  # (the last window may be short)
                s[ctx[30]] = e[ctx[28]] = 40.0  # end before start: never an answer
                s[ctx[20]] = e[ctx[24]] = 30.0  # 5 tokens: over max_answer_tokens=3
            if i == 0:
                s[0] = e[0] = null0 / 2
                s[ctx[10]], e[ctx[11]] = span0 / 2, span0 / 2  # the best valid span overall
            else:
                s[0] = e[0] = 10.0  # other windows are sure there is no answer: the min ignores them
                s[ctx[0]] = e[ctx[0]] = 0.5
            logits[tuple(f.input_ids)] = (s, e)
        return ScriptedQA(logits)

    f0 = features[0]
    ctx0 = [t for t, span in enumerate(f0.offsets) if span is not None]
    expected = LONG_CONTEXT[f0.offsets[ctx0[10]][0]:f0.offsets[ctx0[11]][1]]  # type: ignore[index]
    [(text, score)] = predict_spans(script(2.0, 3.0), tokenizer, [ex], MAX_LENGTH, STRIDE, 4, max_answer_tokens=3)
    assert (text, score) == (expected, pytest.approx(-1.0))
    [(text, score)] = predict_spans(script(4.0, 3.0), tokenizer, [ex], MAX_LENGTH, STRIDE, 4, max_answer_tokens=3)
    assert (text, score) == ("", pytest.approx(1.0))


def test_overfitting_one_example_recovers_its_answer(tokenizer: Any, qa_model: Any) -> None:
    import torch

    from harness.backends.batching import collate

    context = "The dog chased the red ball in the park. Then the cat slept on the mat."
    answerable = example(question="What did the dog chase?", context=context, answer="the red ball")
    unanswerable = example(question="What did the bird eat?", context=context, answer=None)
    before = predict_spans(qa_model, tokenizer, [answerable, unanswerable], MAX_LENGTH, STRIDE, batch_size=8)
    assert before[0][0] != "the red ball"  # the fresh head does not know it yet
    items = span_train_items(tokenizer, [answerable] * 8 + [unanswerable] * 8, MAX_LENGTH, STRIDE)
    assert len(items) == 16 and items[0].span != (0, 0) and items[8].span == (0, 0)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(qa_model.parameters(), lr=1e-3)
    qa_model.train()
    batch = collate(items, tokenizer.pad_token_id, "cpu")
    for _ in range(40):
        loss = qa_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.5
    (text, score), (null_text, null_score) = predict_spans(
        qa_model, tokenizer, [answerable, unanswerable], MAX_LENGTH, STRIDE, batch_size=8)
    assert text == "the red ball" and score < 0
    assert null_text == "" and null_score > 0
