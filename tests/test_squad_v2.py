"""SQuAD v2 scoring on crafted cases worked by hand from the official evaluate-v2.0.py rules."""
from __future__ import annotations

import json

import pytest

from harness.metrics.squad_v2 import (
    exact_match,
    normalize_answer,
    normalize_no_answer,
    squad_v2_report,
    squad_v2_scores,
    token_f1,
)


def test_normalize_answer_follows_the_official_steps():
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_exact_and_f1_on_single_pairs():
    assert exact_match("Eiffel Tower", "the Eiffel tower.") == 1
    assert exact_match("Denver Broncos", "Broncos") == 0
    # pred [broncos] vs gold [denver, broncos]: P = 1, R = 1/2, F1 = 2/3
    assert token_f1("Denver Broncos", "the Broncos") == pytest.approx(2 / 3)
    # pred [in, 1976, and, 1977] vs gold [1976]: P = 1/4, R = 1, F1 = 2/5
    assert token_f1("1976", "in 1976 and 1977") == pytest.approx(2 / 5)
    assert token_f1("x y y", "y y z") == pytest.approx(2 / 3)  # counts (2 shared), not sets (1)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0 and token_f1("x", "") == 0.0


def test_crafted_set_with_unanswerable_questions():
    preds = ["Denver Broncos", "the Broncos", "", "", "Paris", "1976"]
    refs = [
        ["Denver Broncos", "Broncos"],  # exact on either gold
        ["Denver Broncos"],             # F1 2/3, not exact
        ["Denver Broncos"],             # answerable, abstained: 0
        [],                             # unanswerable, abstained: 1
        [],                             # unanswerable, answered: 0
        ["in 1976", "1976 season"],     # max over golds: "1976 season" F1 = 2/3, exact 0
    ]
    out = squad_v2_scores(preds, refs)
    assert out["per_example"]["exact"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert out["per_example"]["f1"] == pytest.approx([1.0, 2 / 3, 0.0, 1.0, 0.0, 2 / 3])
    assert out["total"] == 6 and out["HasAns_total"] == 4 and out["NoAns_total"] == 2
    assert out["exact"] == pytest.approx(100 * 2 / 6)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 2 / 3) / 6)
    assert out["HasAns_exact"] == pytest.approx(100 * 1 / 4)
    assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 4)
    assert out["NoAns_exact"] == out["NoAns_f1"] == pytest.approx(50.0)
    assert out["failures"] == 0


def test_no_na_probs_means_predictions_are_taken_as_given():
    # Official: without na_probs every question's is 0, so no threshold turns an answer into an
    # abstention: "" on an unanswerable question (row 3) is right, on row 2 wrong.
    preds = ["Denver Broncos", "the Broncos", "", "", "Paris", "1976"]
    refs = [["Denver Broncos"], ["Denver Broncos"], ["Denver Broncos"], [], [], ["1976 season"]]
    out = squad_v2_scores(preds, refs)
    assert out["per_example"]["exact"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert out["NoAns_exact"] == pytest.approx(50.0)
    # The official script sweeps thresholds only over given probabilities: derived ones are ties
    # (every answer at 0), and a sweep would score cuts between equal probabilities.
    assert not any(key.startswith("best_") for key in out)
    assert squad_v2_scores(preds, refs, na_prob_thresh=0.5)["per_example"] == out["per_example"]


def test_best_threshold_from_given_na_probs():
    # q0 HasAns right (na .1), q1 NoAns answered "wrong" (na .9), q2 HasAns wrong (na .8).
    # Sweep from 1 (q1 abstains): q0 +1 -> 2 (best, thresh .1); q2 +0 -> 2; q1 -1 -> 1.
    preds, refs, na = ["Denver", "wrong", "nope"], [["Denver"], [], ["Paris"]], [0.1, 0.9, 0.8]
    out = squad_v2_scores(preds, refs, na)
    assert out["exact"] == pytest.approx(100 / 3)  # default threshold 1.0 changes nothing
    assert out["best_exact"] == pytest.approx(200 / 3)
    assert out["best_exact_thresh"] == pytest.approx(0.1)
    assert out["best_f1_thresh"] == pytest.approx(0.1)
    # With threshold 0.5, q1 and q2 count as "no answer": q1 right, q2 wrong.
    cut = squad_v2_scores(preds, refs, na, na_prob_thresh=0.5)
    assert cut["per_example"]["exact"] == [1.0, 1.0, 0.0]
    assert cut["NoAns_exact"] == 100.0 and cut["HasAns_exact"] == 50.0


def test_hf_evaluate_docstring_example():
    # HF evaluate's squad_v2 example: one answerable question, "1976" predicted, na prob 0.
    out = squad_v2_scores(["1976"], [["1976"]], [0.0])
    expected = {"exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                "HasAns_total": 1, "best_exact": 100.0, "best_exact_thresh": 0.0, "best_f1": 100.0,
                "best_f1_thresh": 0.0}
    assert {k: out[k] for k in expected} == expected
    assert "NoAns_total" not in out


def test_gold_answers_that_normalise_to_nothing_are_dropped():
    # Official: the gold "The" normalises to "", so the only gold is "" -- yet the question
    # still counts as HasAns because its answer list is not empty.
    out = squad_v2_scores([""], [["The"]])
    assert out["exact"] == 100.0 and out["HasAns_total"] == 1


def test_failures_score_zero_even_on_unanswerable_questions():
    out = squad_v2_scores([None, None, ""], [[], ["Paris"], []])
    assert out["per_example"]["exact"] == [0.0, 0.0, 1.0]
    assert out["failures"] == 2
    # Only the real abstention is credited at any threshold.
    swept = squad_v2_scores([None, None, ""], [[], ["Paris"], []], [1.0, 1.0, 1.0])
    assert swept["best_exact"] == pytest.approx(100 / 3)


def test_a_failed_generation_is_not_credited_as_no_answer():
    """The task-level scorer (generate mode) must keep a failure as a failure: read as "" it
    would be the right answer to every unanswerable question."""
    from harness.kinds import GenerateSquad
    from harness.kinds.scoring_helpers import score_stage
    from harness.task.spec import HubData, TaskSpec
    from harness.types import Example, Prediction

    spec = TaskSpec(HubData("x", "x"), GenerateSquad(("question",), "answers"), "{question}")
    examples = [Example("0", ("q0",), -1, ()), Example("1", ("q1",), -1, ("Paris",))]
    predictions = [Prediction("0", -1, None, (), output=None), Prediction("1", -1, None, (), output="Paris")]
    report, _ = score_stage(spec, examples, predictions, seed=0)
    assert report["exact"]["value"] == 50.0 and report["NoAns_exact"]["value"] == 0.0 and report["failures"] == 1


def test_report_adds_cis_and_is_json_ready():
    preds = ["Denver Broncos", "the Broncos", "", "", "Paris"]
    refs = [["Denver Broncos"], ["Denver Broncos"], ["Denver Broncos"], [], []]
    report = squad_v2_report(preds, refs, resamples=200, seed=1)
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
        lo, hi = report[key]["ci"]
        assert 0.0 <= lo <= report[key]["value"] <= hi <= 100.0, key
    assert report["f1"]["value"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 5)
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(
    "preds, refs, na",
    [(["a"], [["a"], ["b"]], None), ([], [], None), (["a"], ["a"], None), (["a"], [["a"]], [0.1, 0.2])],
)
def test_bad_inputs_are_rejected(preds, refs, na):
    with pytest.raises(ValueError):
        squad_v2_scores(preds, refs, na)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Unanswerable", "unanswerable.", "No answer", "NO ANSWER.", "not answerable",
     "Cannot be answered.", "N/A", "n/a", "n.a.", "The question is unanswerable.", "<no answer>"],
)
def test_no_answer_phrasings_become_empty(text):
    assert normalize_no_answer(text) == ""


@pytest.mark.parametrize("text", ["Denver", "No", "Na", "none of the above", "There is no answer key"])
def test_real_answers_are_kept(text):
    assert normalize_no_answer(text) == text


def test_no_answer_extras_and_failures():
    assert normalize_no_answer("Unknown.", extra=["unknown"]) == ""
    assert normalize_no_answer("Unknown.") == "Unknown."
    assert normalize_no_answer(None) is None
