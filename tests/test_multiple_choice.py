"""The multiple-choice kind (harness/kinds/multiple_choice.py), called directly with the scripted
backend: the requests it sends, argmax and failures, lm-eval's accuracy and acc_norm, data errors,
training items, option checks. The end-to-end run waits for the engine to ask the kind."""
from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from harness.backends.base import Loglikelihood
from harness.backends.models import ModelRef
from harness.backends.scripted import ScriptedBackend
from harness.compare.stats import wilson_interval
from harness.errors import BenchError
from harness.kinds.multiple_choice import MultipleChoice
from harness.options import RunConfig
from harness.resolve import resolve
from harness.task.local_files import read_split_file
from harness.task.registry import get_task
from harness.task.spec import HubData, TaskSpec
from harness.types import Example, Prediction

DATA = Path(__file__).parent / "data"
KIND = MultipleChoice(fields=("question",))
SPEC = TaskSpec(data=HubData("none/mc", local="mc"), kind=KIND, prompt="Question: {question}\nAnswer:", name="mc")
CONFIG = RunConfig(task="mc", model="m", objective="lm", max_length=64)
CAUSAL = ModelRef("tiny", "tiny", "causal", "gpt2")


def question(id: str, text: str, choices: tuple[str, ...], label: int) -> Example:
    return Example(id=id, texts=(text,), label=label, references=choices)


QUESTIONS = [
    question("q0", "What color is the sky?", ("green", "blue", "purple"), 1),
    question("q1", "How many legs does a dog have?", ("four", "two"), 0),
    question("q2", "Which animal says moo?", ("a cat", "a duck", "a cow", "a fish"), 2),
]


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from tiny_models import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2")))


# ---------------------------------------------------------------- requests and predictions

def test_one_request_per_question_carrying_all_its_choices(gpt2_tokenizer):
    tok = gpt2_tokenizer
    backend = ScriptedBackend(tokenizer=tok)
    KIND.predict(SPEC, backend, QUESTIONS, [], CONFIG, "lm")
    assert backend.calls == [("loglikelihood", 3)]  # one call, one request per question
    for request, example in zip(backend.requests, QUESTIONS):
        assert request.context == tuple(tok(f"Question: {example.texts[0]}\nAnswer:")["input_ids"])
        assert request.continuations == tuple(tuple(tok(" " + c, add_special_tokens=False)["input_ids"])
                                              for c in example.references)
    assert len(backend.requests[2].continuations) == 4


def test_a_long_prompt_keeps_its_end_and_room_for_the_longest_choice(gpt2_tokenizer):
    tok = gpt2_tokenizer
    long = question("long", "the team " * 40 + "won. Who won?", ("the team", "the city and the country"), 0)
    (request,) = KIND.requests(SPEC, tok, False, [long], max_length=24)
    longest = max(len(c) for c in request.continuations)
    whole = tok(SPEC.render(long.texts))["input_ids"]
    assert request.context == tuple(whole[-(24 - longest):])  # the question and "Answer:" survive
    assert len(request.context) + longest == 24
    (encoder_side,) = KIND.requests(SPEC, tok, True, [long], max_length=24)  # seq2seq: choices are decoder side
    assert len(encoder_side.context) == 24


def test_argmax_picks_the_most_likely_choice_first_of_equals_and_nan_is_a_failure():
    scores = {"q0": (-3.0, -1.0, -2.0), "q1": (-1.0, -1.0), "q2": (-1.0, math.nan, -0.5, -2.0)}
    backend = ScriptedBackend(loglikelihood=lambda r: scores[next(q.id for q in QUESTIONS if
                                                                 len(q.references) == len(r.continuations))])
    predictions = KIND.predict(SPEC, backend, QUESTIONS, [], CONFIG, "lm")
    assert [p.label for p in predictions] == [1, 0, None]
    assert [p.gold for p in predictions] == [1, 0, 2]
    assert predictions[0].scores == (-3.0, -1.0, -2.0) and math.isnan(predictions[2].scores[1])


def test_predict_refuses_a_head_objective():
    with pytest.raises(BenchError, match="scored with the LM head only; use --objective lm"):
        KIND.predict(SPEC, ScriptedBackend(), QUESTIONS, [], CONFIG, "head")


# ---------------------------------------------------------------- scoring

def test_accuracy_and_lm_evals_acc_norm_by_hand():
    """acc: argmax of the summed log-likelihoods; acc_norm: argmax of log-likelihood / the choice's
    characters (lm-eval: `lls / completion_len`, the choice without its leading space)."""
    examples = [
        question("a", "q", ("x", "abcdefgh"), 1),       # acc picks 0 (-2 > -8); per char -2 vs -1: norm picks 1
        question("b", "q", ("yes", "no"), 0),           # both pick 0
        question("c", "q", ("abcd", "ab", "a"), 0),      # acc picks 2 (-1); per char -1, -1, -1: first of equals, 0
        question("d", "q", ("one", "two"), 0),           # failure: wrong for both
        question("e", "q", ("aaaa", "bb"), 0),           # acc picks 1 (-3 > -4); per char -1 vs -1.5: norm picks 0
        question("f", "q", ("ab", "abcdefghij"), 1),     # acc picks 0; per char -1 vs -0.9 (with the space: 0)
        question("g", "q", ("a", "bbbb"), 0),            # acc picks 0; per char -1 vs -0.5: norm picks 1
    ]
    scores = [(-2.0, -8.0), (-1.0, -5.0), (-4.0, -2.0, -1.0), (math.nan, -1.0), (-4.0, -3.0), (-2.0, -9.0),
              (-1.0, -2.0)]
    predictions = [Prediction(e.id, e.label, None if any(map(math.isnan, s)) else max(range(len(s)), key=s.__getitem__),
                              s) for e, s in zip(examples, scores)]
    metrics, scored = KIND.score(SPEC, examples, predictions, seed=0)
    # acc: right on b and g -> 2/7; acc_norm: right on a, b, c, e, f -> 5/7
    assert metrics["accuracy"]["value"] == pytest.approx(2 / 7)
    assert metrics["acc_norm"]["value"] == pytest.approx(5 / 7)
    assert metrics["accuracy"]["ci"] == pytest.approx(list(wilson_interval(2, 7)))
    assert metrics["acc_norm"]["ci"] == pytest.approx(list(wilson_interval(5, 7)))
    assert metrics["failures"] == 1 and metrics["n"] == 7
    assert metrics["chance_accuracy"] == pytest.approx((1 / 2 * 6 + 1 / 3) / 7)
    assert set(metrics["per_class"]) == {"A", "B", "C"}  # answer positions
    right = [(0, 1), (1, 1), (0, 1), (0, 0), (0, 1), (0, 1), (1, 0)]
    assert [p.values for p in scored] == [{"correct": float(a), "correct_norm": float(n)} for a, n in right]
    assert KIND.validation_values(SPEC, scored) == {"accuracy": pytest.approx(2 / 7)}
    assert {"accuracy", "acc_norm", "f1_macro"} <= set(KIND.metric_names(SPEC))
    reordered, _ = KIND.score(SPEC, examples[::-1], predictions, seed=0)  # examples are matched by id
    assert reordered["acc_norm"] == metrics["acc_norm"]


def test_one_position_for_every_answer_is_warned_and_the_majority_position_given():
    examples = [question(f"q{i}", "q", ("a", "b", "c", "d"), i % 3) for i in range(12)]
    predictions = [Prediction(e.id, e.label, 0, (-1.0, -2.0, -3.0, -4.0)) for e in examples]
    metrics, _ = KIND.score(SPEC, examples, predictions, seed=0)
    # D: never right, never answered; its zero F1 would pull macro-F1 down for nothing
    assert set(metrics["per_class"]) == {"A", "B", "C"}
    assert metrics["f1_macro"]["value"] == pytest.approx((2 * 4 / (12 + 4)) / 3)  # A: P 4/12, R 1; B, C: 0
    assert metrics["warnings"] == ["every answer is choice A: its accuracy is that position's share of the eval set"]
    assert metrics["majority"] == {"label": "A", "accuracy": pytest.approx(1 / 3)}


# ---------------------------------------------------------------- data

def test_examples_from_the_task_files_jsonl_and_parquet_alike(tmp_path):
    frame = read_split_file(DATA / "mc_demo" / "test.jsonl")
    examples = KIND.examples(frame, frame["id"].tolist(), [(q,) for q in frame["question"]], "test.jsonl")
    assert len(examples) == 24 and all(len(e.references) >= 2 and 0 <= e.label < len(e.references) for e in examples)
    assert examples[0] == question("test-00", "How many wheels does a bicycle have?", ("three", "two", "four"), 1)
    frame.to_parquet(tmp_path / "test.parquet")  # list cells come back as numpy arrays
    again = read_split_file(tmp_path / "test.parquet")
    assert KIND.examples(again, again["id"].tolist(), [(q,) for q in again["question"]], "p") == examples


@pytest.mark.parametrize("choices, label, expected", [
    ("['a', 'b']", 0, "column 'choices' row 7 is \"\\['a', 'b'\\]\", not a list of 2 or more choice texts; a CSV cell"),
    (["only"], 0, "column 'choices' row 7 is a list \\['only'\\], not a list of 2 or more choice texts; fix or drop"),
    (["a", "  "], 0, "column 'choices' row 7 has choice 1 '  ', not a non-blank text; fix or drop that row"),
    (["a", 3], 0, "column 'choices' row 7 has choice 1 3, not a non-blank text"),
    (["a", "b"], 2, "column 'label' row 7 is 2, not the index of one of its 2 choices \\(0-1\\); fix or drop"),
    (["a", "b"], 0.5, "column 'label' row 7 is 0.5, not the index of one of its 2 choices"),
    (["a", "b"], "B", "column 'label' row 7 is 'B', not the index"),
    (["a", "b"], None, "column 'label' row 7 is nan, not the index"),  # a missing label
])
def test_a_bad_row_is_one_line_naming_file_column_and_row(choices, label, expected):
    good = {"question": "q?", "choices": ["x", "y"], "label": 0}
    frame = pd.DataFrame([good, {"question": "r?", "choices": choices, "label": label}], index=[3, 7])  # file rows
    with pytest.raises(BenchError) as failure:
        KIND.examples(frame, ["a", "b"], [("q?",), ("r?",)], "data/mc/test.jsonl")
    message = str(failure.value)
    assert message.startswith("data/mc/test.jsonl: ") and "\n" not in message
    assert re.search(expected, message), message


def test_a_kind_without_fields_is_refused_when_the_task_is_built():
    with pytest.raises(ValueError, match="MultipleChoice needs fields"):
        MultipleChoice()
    assert KIND.columns() == ("question", "choices", "label")


# ---------------------------------------------------------------- training

def test_train_items_learn_the_right_choice_with_the_prompt_masked(gpt2_tokenizer):
    tok = gpt2_tokenizer
    items = KIND.train_items(SPEC, tok, False, CONFIG, QUESTIONS)
    for item, example in zip(items, QUESTIONS):
        prompt = tok(f"Question: {example.texts[0]}\nAnswer:")["input_ids"]
        answer = tok(" " + example.references[example.label], add_special_tokens=False)["input_ids"]
        assert item.input_ids == prompt + answer
        assert item.lm_labels == [-100] * len(prompt) + answer
        assert item.label is None
    seq2seq = KIND.train_items(SPEC, tok, True, CONFIG, QUESTIONS[:1])[0]  # the choice is the decoder target
    assert seq2seq.lm_labels == tok(" blue", add_special_tokens=False)["input_ids"]
    assert seq2seq.input_ids == tok("Question: What color is the sky?\nAnswer:")["input_ids"]
    short = KIND.train_items(SPEC, tok, False, RunConfig(task="mc", model="m", objective="lm", max_length=12),
                             [question("x", "the team " * 30, ("the team won",), 0)] * 1 + QUESTIONS[:1])
    assert all(len(item.input_ids) <= 12 for item in short)


# ---------------------------------------------------------------- planning

@pytest.mark.parametrize("ref, config, baselines, expected", [
    (ModelRef("enc", "enc", "encoder", "bert"), CONFIG, ["prompt"], "enc has none \\(an encoder\\); use a causal or"),
    (CAUSAL, CONFIG, ["prompt", "head"], "--baseline head: task mc \\(multiple choice\\) has no classification head"),
    (CAUSAL, RunConfig(task="mc", model="m", objective="head"), ["prompt"], "--objective head: .*use --objective lm"),
    (CAUSAL, RunConfig(task="mc", model="m", objective="lm", method="head"), ["prompt"], "--method head trains only"),
    (CAUSAL, RunConfig(task="mc", model="m", objective="lm", shots=2), ["prompt"], "--shots 2: .* zero-shot; drop"),
])
def test_options_that_contradict_the_kind_are_one_line_each(ref, config, baselines, expected):
    with pytest.raises(BenchError, match=expected) as failure:
        KIND.check(SPEC, ref, config, baselines)
    assert "\n" not in str(failure.value)


def test_defaults_prompt_the_lm_and_train_it():
    KIND.check(SPEC, CAUSAL, CONFIG, ["prompt"])  # a plain run passes
    assert KIND.default_baseline(True) == KIND.default_baseline(False) == "prompt"
    assert resolve(get_task("mc_demo"), "m", {}, can_prompt=True).objective == "lm"
    shown, answers = KIND.shown(QUESTIONS[:1])
    assert shown == {"q0": "What color is the sky? | choices: green / blue / purple"} and answers == {"q0": "blue"}


# ---------------------------------------------------------------- end to end (once the engine asks the kind)

def _engine_asks_the_kind() -> bool:
    """The kinds branch moves the engine onto `spec.kind.predict(...)` with an HFBackend."""
    import harness.backends.hf as hf

    return hasattr(hf, "HFBackend")


WAITS_FOR_THE_ENGINE = pytest.mark.skipif(not _engine_asks_the_kind(),
                                          reason="the engine does not ask the kind yet (no HFBackend in backends/hf.py)")


@WAITS_FOR_THE_ENGINE
def test_mc_demo_splits_from_its_files():
    """The loader asks the kind for its columns and examples: 24 eval questions, train and validation
    carved apart, each question with its choices and the index of the right one."""
    from harness.task.data import build_splits

    splits = build_splits(get_task("mc_demo"), DATA, train_samples=None, eval_samples=None, validation_samples=6,
                          seed=0)
    assert (len(splits.eval), len(splits.validation), len(splits.train)) == (24, 6, 30)
    for example in splits.train + splits.validation + splits.eval:
        assert len(example.references) >= 2 and 0 <= example.label < len(example.references)
    assert not {e.id for e in splits.eval} & {e.id for e in splits.train + splits.validation}


@WAITS_FOR_THE_ENGINE
def test_bench_run_mc_demo_prints_a_before_after_accuracy_table(bench, tiny_model, tmp_path):
    pytest.importorskip("torch")
    results = tmp_path / "results"
    code, out, err = bench("run", "mc_demo", "--models", tiny_model("gpt2"), "--data-dir", DATA, "--results", results,
                           "--train-samples", "24", "--eval-samples", "24", "--validation-samples", "6",
                           "--epochs", "1", "--batch-size", "8", "--eval-batch-size", "8", "--max-length", "64")
    assert code == 0, err
    assert "before / after fine-tuning" in out and "| prompt 0-shot | 24 |" in out
    with sqlite3.connect(results / "bench.sqlite") as db:
        rows = dict(db.execute("SELECT stage, metrics FROM stages").fetchall())
    assert set(rows) == {"baseline:prompt", "finetune", "finetuned"}
    for stage in ("baseline:prompt", "finetuned"):
        metrics = json.loads(rows[stage])
        assert 0.0 <= metrics["accuracy"]["value"] <= 1.0 and "acc_norm" in metrics and metrics["n"] == 24
