"""classification_report against hand-computed values, plus CI sanity checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from harness.metrics.classification import (
    _batched_confusion,
    _metrics_from_confusion,
    classification_report,
    correct_mask,
)

NAMES = ["a", "b", "c"]

# 10 examples, 3 classes. Confusion (rows = gold, cols = predicted):
#   gold a: [2, 1, 1]   gold b: [1, 2, 0]   gold c: [0, 1, 2]
# tp = [2, 2, 2], predicted = [3, 4, 3], support = [4, 3, 3], accuracy = 6/10
# precision = [2/3, 1/2, 2/3]   recall = [1/2, 2/3, 2/3]
# f1 = 2tp/(pred+support) = [4/7, 4/7, 4/6]
# macro P = (2/3 + 1/2 + 2/3)/3 = 11/18;  macro R = (1/2 + 2/3 + 2/3)/3 = 11/18
# macro F1 = (4/7 + 4/7 + 2/3)/3 = 38/63
# weighted P = (4*2/3 + 3*1/2 + 3*2/3)/10 = 37/60
# weighted R = (4*1/2 + 3*2/3 + 3*2/3)/10 = 6/10 (always equals accuracy)
# weighted F1 = (4*4/7 + 3*4/7 + 3*2/3)/10 = (4 + 2)/10 = 6/10
LABELS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS = [0, 0, 1, 2, 1, 1, 0, 2, 1, 2]


def test_hand_computed_three_class():
    r = classification_report(LABELS, PREDS, NAMES, resamples=0)
    assert r["n"] == 10 and r["failures"] == 0
    assert r["accuracy"]["value"] == pytest.approx(0.6)
    assert r["precision_macro"]["value"] == pytest.approx(11 / 18)
    assert r["recall_macro"]["value"] == pytest.approx(11 / 18)
    assert r["f1_macro"]["value"] == pytest.approx(38 / 63)
    assert r["precision_weighted"]["value"] == pytest.approx(37 / 60)
    assert r["recall_weighted"]["value"] == pytest.approx(0.6)
    assert r["f1_weighted"]["value"] == pytest.approx(0.6)
    pc = r["per_class"]
    assert pc["a"] == pytest.approx({"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert pc["c"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert all(type(v["support"]) is int for v in pc.values())


def test_resamples_zero_gives_degenerate_ci():
    r = classification_report(LABELS, PREDS, NAMES, resamples=0)
    assert r["accuracy"]["ci"] == [0.6, 0.6]
    assert r["f1_macro"]["ci"] == [r["f1_macro"]["value"]] * 2


def test_failures_count_as_wrong_and_stay_in_n():
    # gold [a, a, b, b, c], predicted [a, FAIL, b, FAIL, a]
    # tp = [1, 1, 0], predicted (failures are nobody's) = [2, 1, 0], support = [2, 2, 1]
    # accuracy = 2/5 (dropping failures would wrongly give 2/3)
    # precision = [1/2, 1, 0 (0/0 -> 0)], recall = [1/2, 1/2, 0], f1 = [2/4, 2/3, 0]
    # macro P = 1.5/3 = 1/2, macro R = 1/3, macro F1 = (1/2 + 2/3)/3 = 7/18
    # weighted P = (2*1/2 + 2*1)/5 = 3/5, weighted R = 2/5, weighted F1 = (1 + 4/3)/5 = 7/15
    r = classification_report([0, 0, 1, 1, 2], [0, None, 1, None, 0], NAMES, resamples=0)
    assert r["n"] == 5 and r["failures"] == 2
    assert r["accuracy"]["value"] == pytest.approx(2 / 5)
    assert r["precision_macro"]["value"] == pytest.approx(1 / 2)
    assert r["recall_macro"]["value"] == pytest.approx(1 / 3)
    assert r["f1_macro"]["value"] == pytest.approx(7 / 18)
    assert r["precision_weighted"]["value"] == pytest.approx(3 / 5)
    assert r["recall_weighted"]["value"] == pytest.approx(2 / 5)
    assert r["f1_weighted"]["value"] == pytest.approx(7 / 15)
    assert r["per_class"]["a"]["support"] == 2
    assert r["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_all_failures_is_zero_not_error():
    r = classification_report([0, 1, 2], [None, None, None], NAMES, resamples=50)
    assert r["failures"] == 3 and r["n"] == 3
    for key in ("f1_macro", "precision_weighted"):
        assert r[key] == {"value": 0.0, "ci": [0.0, 0.0]}
    # 0/3 correct: Wilson's upper bound (z^2/n) / (1 + z^2/n) = 1.280488 / 2.280488 = 0.56150
    assert r["accuracy"]["value"] == 0.0 and r["accuracy"]["ci"] == pytest.approx([0.0, 0.56150], abs=1e-5)


def test_correct_mask():
    assert correct_mask([0, 1, 2, 1], [0, None, 1, 1]) == [True, False, False, True]
    with pytest.raises(ValueError):
        correct_mask([0, 1], [0])


def _random_case(n: int, k: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    preds = [None if f else int(v) for v, f in zip(p, rng.random(n) < 0.05)]
    return y.tolist(), preds, [f"l{i}" for i in range(k)]


def test_agrees_with_sklearn_on_random_case():
    y, preds, names = _random_case(500)
    r = classification_report(y, preds, names, resamples=0)
    p = [-1 if q is None else q for q in preds]
    ids = list(range(len(names)))
    for avg in ("macro", "weighted"):
        assert r[f"f1_{avg}"]["value"] == pytest.approx(
            f1_score(y, p, labels=ids, average=avg, zero_division=0)
        )
    assert r["failures"] == sum(q is None for q in preds)


def test_vectorized_bootstrap_metrics_match_sklearn_per_resample():
    # The CI path computes metrics from batched confusion matrices; check it row by row.
    y, preds, names = _random_case(200, k=5, seed=3)
    ya = np.asarray(y)
    pa = np.asarray([-1 if q is None else q for q in preds])
    idx = np.random.default_rng(0).integers(0, ya.size, size=(20, ya.size))
    got = _metrics_from_confusion(_batched_confusion(ya, pa, 5, idx))
    for row in range(idx.shape[0]):
        yy, pp = ya[idx[row]], pa[idx[row]]
        assert got["accuracy"][row] == pytest.approx(np.mean(yy == pp))
        for avg in ("macro", "weighted"):
            prf = precision_recall_fscore_support(
                yy, pp, labels=list(range(5)), average=avg, zero_division=0
            )
            for name, value in zip(("precision", "recall", "f1"), prf[:3]):
                assert got[f"{name}_{avg}"][row] == pytest.approx(value)


def test_accuracy_ci_is_the_wilson_interval():
    # 8/16 by hand: z = 1.959964, z^2/n = 0.240086, center 0.5, half = z/(1 + z^2/n)
    # * sqrt(0.25/16 + z^2/(4*256)) = 1.580503 * 0.139199 = 0.220004 -> (0.279996, 0.720004)
    r = classification_report([0] * 8 + [1] * 8, [0] * 16, ["a", "b"], resamples=200)
    assert r["accuracy"]["ci"] == pytest.approx([0.279996, 0.720004], abs=2e-6)
    # 1/1 correct: a bootstrap gives [1, 1]; Wilson (statsmodels proportion_confint) 0.2065 to 1
    one = classification_report([1], [1], ["a", "b"], resamples=200)["accuracy"]["ci"]
    assert one[0] == pytest.approx(0.20654, abs=1e-5) and one[1] == pytest.approx(1.0)


def test_ci_contains_estimate_and_is_within_unit_interval():
    y, preds, names = _random_case(400)
    r = classification_report(y, preds, names, resamples=500, seed=0)
    for key, entry in r.items():
        if isinstance(entry, dict) and "ci" in entry:
            lo, hi = entry["ci"]
            assert 0.0 <= lo <= entry["value"] <= hi <= 1.0, key
            assert lo < hi, key


def test_ci_narrows_with_more_data():
    small = classification_report(*_random_case(100), resamples=500)
    large = classification_report(*_random_case(5000), resamples=500)
    for key in ("accuracy", "f1_macro", "precision_weighted"):
        w_small = small[key]["ci"][1] - small[key]["ci"][0]
        w_large = large[key]["ci"][1] - large[key]["ci"][0]
        assert w_large < w_small / 3, key  # ~sqrt(50) ~ 7x narrower in theory


def test_deterministic_with_seed_and_json_serialisable():
    y, preds, names = _random_case(300)
    a = classification_report(y, preds, names, resamples=200, seed=7)
    b = classification_report(y, preds, names, resamples=200, seed=7)
    c = classification_report(y, preds, names, resamples=200, seed=8)
    assert a == b
    assert a["f1_macro"]["ci"] != c["f1_macro"]["ci"]
    assert json.loads(json.dumps(a)) == a


@pytest.mark.parametrize(
    "labels, preds, names",
    [
        ([0, 1], [0], NAMES),  # length mismatch
        ([], [], NAMES),  # empty
        ([0, 3], [0, 1], NAMES),  # gold out of range
        ([0, 1], [0, 5], NAMES),  # prediction out of range
        ([0, 1], [0, 1], ["a", "a"]),  # duplicate names
    ],
)
def test_rejects_bad_input(labels, preds, names):
    with pytest.raises(ValueError):
        classification_report(labels, preds, names, resamples=0)
