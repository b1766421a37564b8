"""The scripted backend (harness/backends/scripted.py): a second implementation of the Backend
protocol, answering from rules and recording every request, so kinds are tested without a model."""
from __future__ import annotations

import math

import pytest

from harness.backends.base import (
    Backend,
    Generation,
    HeadScores,
    Loglikelihood,
    RollingLoglikelihood,
    Span,
    SpanQuery,
    TokenLoglikelihood,
)
from harness.backends.scripted import DEFAULT_OUTPUT, ScriptedBackend, WhitespaceTokenizer


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2")))


def test_it_is_a_backend():
    """The protocol is runtime-checkable: every method and attribute the stages call is there."""
    backend = ScriptedBackend()
    assert isinstance(backend, Backend)
    assert (backend.seq2seq, backend.batch_size) == (False, 8)
    assert not isinstance(object(), Backend)  # the check itself can fail


def test_defaults_answer_every_method_and_every_request_is_recorded():
    backend = ScriptedBackend(num_labels=4)
    tok = backend.tokenizer.encode
    asked = Loglikelihood(tuple(tok("Question: sky? Answer:")), (tuple(tok("blue")), tuple(tok("very dark green"))))
    assert backend.loglikelihood([asked]) == [(-1.0, -3.0)]  # token_logprob per token of each continuation
    assert backend.rolling_loglikelihood([RollingLoglikelihood(tuple(tok("a b c d e")), 4, 2)]) == [
        TokenLoglikelihood(-4.0, 4)]  # every token after the first, once
    assert backend.generate([Generation((5, 6), max_new_tokens=4)]) == [DEFAULT_OUTPUT]
    assert backend.head_scores([HeadScores(("a text",), 32)]) == [(0.25, 0.25, 0.25, 0.25)]
    assert backend.extract_spans([SpanQuery("q?", "some context", 64, 16)]) == [Span("", 0.0)]
    assert [type(r).__name__ for r in backend.requests] == ["Loglikelihood", "RollingLoglikelihood", "Generation",
                                                            "HeadScores", "SpanQuery"]
    assert backend.requests[0] is asked and backend.of_type(Loglikelihood) == [asked]
    assert backend.calls == [("loglikelihood", 1), ("rolling_loglikelihood", 1), ("generate", 1),
                             ("head_scores", 1), ("extract_spans", 1)]


def test_generation_rules_fixed_listed_or_a_function_and_stop_strings_cut():
    fixed = ScriptedBackend(generate="Paris.\nNext question")
    assert fixed.generate([Generation((1,), 8, stop=("\n",)), Generation((2,), 8)]) == ["Paris.", "Paris.\nNext question"]
    listed = ScriptedBackend(generate=["one", "two"])
    assert listed.generate([Generation((1,), 4), Generation((2,), 4)]) == ["one", "two"]
    with pytest.raises(ValueError, match="ran out of answers at Generation request"):
        listed.generate([Generation((3,), 4)])
    echo = ScriptedBackend(generate=lambda request: f"{len(request.prompt)} tokens, t={request.temperature}")
    assert echo.generate([Generation((1, 2, 3), 4, temperature=0.5)]) == ["3 tokens, t=0.5"]


def test_loglikelihood_scripted_by_continuation_text_on_a_real_tokenizer(gpt2_tokenizer):
    """A mapping keys each continuation by its decoded text (the leading space stripped); an
    unscripted one scores token_logprob per token; a function sees the whole request."""
    tok = gpt2_tokenizer
    ids = [tuple(tok(" " + word, add_special_tokens=False)["input_ids"]) for word in ("blue", "green", "purple")]
    context = tuple(tok("The sky is")["input_ids"])
    backend = ScriptedBackend(tokenizer=tok, loglikelihood={"blue": -0.5, "green": -7.0}, token_logprob=-2.0)
    (scores,) = backend.loglikelihood([Loglikelihood(context, tuple(ids))])
    assert scores == (-0.5, -7.0, -2.0 * len(ids[2]))
    nan = ScriptedBackend(loglikelihood=lambda request: [math.nan] * len(request.continuations))
    assert all(math.isnan(s) for s in nan.loglikelihood([Loglikelihood(context, tuple(ids))])[0])
    short = ScriptedBackend(loglikelihood=lambda request: [0.0])
    with pytest.raises(ValueError, match="gave 1 scores for 3 continuations"):
        short.loglikelihood([Loglikelihood(context, tuple(ids))])


def test_head_scores_and_spans_scripted():
    backend = ScriptedBackend(head_scores=[(0.9, 0.1), (0.2, 0.8)],
                              spans=lambda query: Span(query.context.split()[0], -1.5))
    assert backend.head_scores([HeadScores(("a",), 8), HeadScores(("b",), 8)]) == [(0.9, 0.1), (0.2, 0.8)]
    assert backend.extract_spans([SpanQuery("who?", "Ada wrote it", 64, 16)]) == [Span("Ada", -1.5)]


def test_whitespace_tokenizer_is_stable_and_shaped_like_a_hugging_face_one():
    first, second = WhitespaceTokenizer(), WhitespaceTokenizer()
    ids = first("the cat sat")["input_ids"]
    assert ids == second("the cat sat")["input_ids"] and len(ids) == 3 and len(set(ids)) == 3
    assert first(["the cat", "sat"], add_special_tokens=False)["input_ids"] == [ids[:2], ids[2:]]
    assert first.decode(ids) == "the cat sat"
    assert min(ids) > max(first.pad_token_id, first.eos_token_id)  # no word collides with a special token
    assert first.decode([*ids, first.eos_token_id], skip_special_tokens=True) == "the cat sat"
