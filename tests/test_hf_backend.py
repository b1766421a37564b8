"""HFBackend answers the Backend contract with exactly what the free functions compute: the same
numbers, in the requests' order, one call per group of requests that share their settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from harness.backends.base import (Backend, Generation, HeadScores, Loglikelihood, RollingLoglikelihood,
                                   SpanQuery)
from harness.backends.generate import generate_batched, rolling_nll, target_nll
from harness.backends.hf import HFBackend, classify_with_head, score_causal, score_seq2seq
from harness.types import Example, TrainItem

CONTEXTS = [tuple(range(5, 17)), tuple(range(20, 26)), tuple(range(30, 45))]


def _lm(tiny_model: Callable[[str], Path], family: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(tiny_model(family))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return auto.from_pretrained(tiny_model(family), dtype=torch.float32).eval(), tokenizer


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_loglikelihood_equals_the_free_functions(tiny_model: Callable[[str], Path], family: str) -> None:
    model, tokenizer = _lm(tiny_model, family)
    seq2seq = family == "t5"
    backend = HFBackend(model, tokenizer, seq2seq, batch_size=2)
    assert isinstance(backend, Backend)
    # shared continuations (classification verbalizers): one scoring call, prefix KV and all
    choices = ((40,), (41, 42), (43, 44, 45))
    got = backend.loglikelihood([Loglikelihood(c, choices) for c in CONTEXTS])
    scorer = score_seq2seq if seq2seq else score_causal
    want = scorer(model, [list(c) for c in CONTEXTS], [list(c) for c in choices], tokenizer.pad_token_id, 2)
    assert got == [tuple(row) for row in want]
    # one continuation each (reference perplexity): target_nll's numbers, at half the batch
    targets = [(40, 41, 42), (43,), (44, 45, 46, 47)]
    single = backend.loglikelihood([Loglikelihood(c, (t,)) for c, t in zip(CONTEXTS, targets)])
    items = ([TrainItem(list(c), lm_labels=list(t)) for c, t in zip(CONTEXTS, targets)] if seq2seq else
             [TrainItem(list(c) + list(t), lm_labels=[-100] * len(c) + list(t)) for c, t in zip(CONTEXTS, targets)])
    nll = target_nll(model, items, pad_id=tokenizer.pad_token_id, batch_size=1, seq2seq=seq2seq)
    assert single == [(-total,) for total, _ in nll]
    assert backend.batch_size == 2  # no out-of-memory: the batch it was given


def test_mixed_continuation_sets_keep_the_request_order(tiny_model: Callable[[str], Path]) -> None:
    model, tokenizer = _lm(tiny_model, "gpt2")
    backend = HFBackend(model, tokenizer, False, batch_size=4)
    first, second = ((40,), (41,)), ((42,), (43,), (44,))
    mixed = backend.loglikelihood([Loglikelihood(CONTEXTS[0], first), Loglikelihood(CONTEXTS[1], second),
                                   Loglikelihood(CONTEXTS[2], first)])
    alone = [backend.loglikelihood([Loglikelihood(CONTEXTS[i], choices)])[0]
             for i, choices in ((0, first), (1, second), (2, first))]
    assert [len(row) for row in mixed] == [2, 3, 2]
    for got, want in zip(mixed, alone):
        assert got == pytest.approx(want, abs=1e-5)


def test_rolling_and_generation_equal_the_free_functions(tiny_model: Callable[[str], Path]) -> None:
    model, tokenizer = _lm(tiny_model, "gpt2")
    backend = HFBackend(model, tokenizer, False, batch_size=2)
    documents = [list(range(5, 60)), list(range(7, 20))]
    rolled = backend.rolling_loglikelihood([RollingLoglikelihood(tuple(d), 16, 8) for d in documents])
    want = rolling_nll(model, documents, max_length=16, stride=8, batch_size=2)
    assert [(-r.logprob, r.tokens) for r in rolled] == want
    prompts = [list(c) for c in CONTEXTS]
    texts = backend.generate([Generation(tuple(p), 5) for p in prompts])
    assert texts == generate_batched(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)


def test_head_scores_and_spans_equal_the_free_functions(tiny_model: Callable[[str], Path]) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    from harness.backends.qa_span import predict_spans

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("bert"))
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model("bert"), num_labels=3).eval()
    pairs = [("a fine film", "it was good"), ("a dull film", "a bore"), ("great fun", "yes")]
    got = HFBackend(classifier, tokenizer, False, 2).head_scores([HeadScores(p, 32) for p in pairs])
    want = classify_with_head(classifier, tokenizer, [Example("", p) for p in pairs], 32, 2)
    assert got == [tuple(row) for row in want]
    reader = AutoModelForQuestionAnswering.from_pretrained(tiny_model("bert")).eval()
    questions = [("who won?", "The Broncos won the game in Denver."), ("where?", "It was in Paris, in May.")]
    spans = HFBackend(reader, tokenizer, False, 2).extract_spans([SpanQuery(q, c, 32, 8, id=str(i))
                                                                  for i, (q, c) in enumerate(questions)])
    want_spans = predict_spans(reader, tokenizer, [Example(str(i), qc) for i, qc in enumerate(questions)], 32, 8, 2)
    assert [(s.text, s.null_score) for s in spans] == want_spans


def test_out_of_memory_halves_the_batch_inside_the_backend(tiny_model: Callable[[str], Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = _lm(tiny_model, "gpt2")
    choices = ((40,), (41, 42))
    reference = HFBackend(model, tokenizer, False, batch_size=1).loglikelihood(
        [Loglikelihood(c, choices) for c in CONTEXTS])
    monkeypatch.setenv("BENCH_FAULTS", "oom@eval-batch=4,oom@eval-batch=2")
    backend = HFBackend(model, tokenizer, False, batch_size=4)
    got = backend.loglikelihood([Loglikelihood(c, choices) for c in CONTEXTS])
    assert backend.batch_size == 1
    for row, want in zip(got, reference):
        assert row == pytest.approx(want, abs=1e-5)
