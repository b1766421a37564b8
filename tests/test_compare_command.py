"""`bench compare`: two stored evaluations paired on their shared examples, on real SQLite stores."""
from __future__ import annotations

import csv
import math
import hashlib
import io
from pathlib import Path

import pytest

from harness.store import Store
from harness.types import Prediction

PARAMS = {"params": {"base": 1000, "added": 0, "total": 1000, "trainable": 10, "trainable_pct": 1.0},
          "train_seconds": 1.0, "tokens_per_second": 10.0, "peak_memory_mb": 1.0}


def classification_metrics(right: list[bool]) -> dict:
    value = sum(right) / len(right)
    return {"headline": "accuracy", "failures": 0, "n": len(right), "accuracy": {"value": value, "ci": [0.0, 1.0]},
            "f1_macro": {"value": value, "ci": [0.0, 1.0]}}


def write_run(store: Store, run_id: str, *, method: str = "lora", model: str = "m", task: str = "sst2",
              before: list[bool], after: list[bool], ids: list[str] | None = None, gold: list[int] | None = None,
              lr: float = 1e-3) -> None:
    """A classification run with the given per-example correctness before and after (gold 1, or `gold`)."""
    ids = ids or [f"e{i}" for i in range(len(before))]
    gold = gold or [1] * len(before)
    config = {"task": task, "model": model, "method": method, "preset": "quick", "seed": 0, "lr": lr,
              "eval_samples": len(before), "early_stop_metric": "auto"}

    def predictions(right: list[bool]) -> list[Prediction]:
        return [Prediction(i, g, g if r else 1 - g, (0.0, 0.0)) for i, g, r in zip(ids, gold, right)]

    info = {"mode": "prompt", "shots": 0}
    store.complete_stage(run_id, "baseline:prompt", config=config, seconds=1.0, metrics=classification_metrics(before),
                         info=info, predictions=predictions(before))
    store.complete_stage(run_id, "finetune", config=config, seconds=1.0, metrics={"best_validation": 0.5},
                         info=PARAMS)
    store.complete_stage(run_id, "finetuned", config=config, seconds=1.0, metrics=classification_metrics(after),
                         info=info, predictions=predictions(after))


def flips(n: int, b: int, c: int, base_right: int) -> tuple[list[bool], list[bool]]:
    """n items: b right->wrong, c wrong->right, the rest unchanged with `base_right` right in A."""
    first = [True] * b + [False] * c + [True] * base_right
    first += [False] * (n - len(first))
    second = [False] * b + [True] * c + first[b + c:]
    return first, second


def fingerprint(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.name.endswith(("-wal", "-shm"))}


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    store = Store(root)
    a, b = flips(200, 4, 16, 150)
    write_run(store, "run-lora", before=[False] * 200, after=a)
    write_run(store, "run-full", method="full", before=[False] * 200, after=b, lr=5e-5)
    store.close()
    return root


def test_two_runs_are_paired_with_mcnemar_mde_and_a_verdict(bench, store_root):
    code, out, err = bench("compare", "run-lora", "run-full", "--margin", "0.02", "--results", store_root)
    assert code == 0, err
    assert "McNemar b=4 c=16" in out
    assert "+0.060" in out  # (16 - 4) / 200
    assert "  0.012  " in out  # exact two-sided binomial p of 4 vs 16: 0.01182
    assert "different (p=0.012)" in out
    assert "MDE: the smallest Δ detectable at 80% power, α 0.05, given n 200 and the observed discordance 0.100" in out
    assert "p adj" not in out  # one pair: no family to adjust over


def test_stages_of_one_run_and_equivalence(bench, store_root):
    store = Store(store_root)
    write_run(store, "big", **dict(zip(("before", "after"), flips(400, 2, 2, 150))))
    store.close()
    code, out, _ = bench("compare", "big:baseline-prompt", "big:finetuned", "--margin", "0.02", "--format", "md",
                         "--results", store_root)
    assert code == 0
    assert "| big:baseline-prompt | big | sst2 | 400 |" in out
    assert "equivalent within ±0.02 (p=<1e-4)" in out
    code, out, _ = bench("compare", "run-lora", "run-lora:baseline", "--margin", "0.5", "--results", store_root)
    assert code == 0 and "run-lora:baseline-prompt" in out and "different (p=<1e-4)" in out


def test_small_n_is_inconclusive(bench, tmp_path):
    store = Store(tmp_path / "r")
    a, b = flips(30, 1, 2, 20)
    write_run(store, "x", before=a, after=b)
    store.close()
    code, out, _ = bench("compare", "x:baseline", "x", "--margin", "0.02", "--results", tmp_path / "r")
    assert code == 0 and "inconclusive at this n" in out


def test_partial_overlap_is_paired_on_the_intersection(bench, tmp_path):
    store = Store(tmp_path / "r")
    write_run(store, "one", before=[True] * 10, after=[True] * 10, ids=[f"e{i}" for i in range(10)])
    write_run(store, "two", before=[True] * 10, after=[False] * 10, ids=[f"e{i}" for i in range(5, 15)])
    store.close()
    code, out, _ = bench("compare", "one", "two", "--format", "csv", "--results", tmp_path / "r")
    assert code == 0
    row = next(csv.DictReader(io.StringIO(out)))
    assert (row["n"], row["n_a"], row["n_b"]) == ("5", "10", "10")
    assert float(row["delta"]) == -1.0 and row["test"] == "McNemar b=5 c=0"
    code, out, _ = bench("compare", "one", "two", "--results", tmp_path / "r")
    assert "paired on the 5 examples both evaluated (one has 10, two has 10)" in out


def test_by_method_pairs_runs_and_adjusts_over_the_family(bench, store_root):
    store = Store(store_root)
    a, b = flips(200, 10, 12, 150)
    write_run(store, "other-lora", model="m2", before=[False] * 200, after=a)
    write_run(store, "other-full", model="m2", method="full", before=[False] * 200, after=b, lr=5e-5)
    store.close()
    code, out, err = bench("compare", "--task", "sst2", "--by", "method", "--results", store_root)
    assert code == 0, err
    assert "p adj (holm)" in out
    assert "Holm (family-wise error rate) over a family of 2 comparisons" in out
    assert "0.012  0.024\n" in out  # Holm: 2 x 0.01182
    code, out, _ = bench("compare", "--task", "sst2", "--by", "method", "--adjust", "bh", "--format", "csv",
                         "--results", store_root)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["adjustment"] for r in rows] == ["bh", "bh"] and {(r["a"], r["b"]) for r in rows} == {
        ("run-lora", "run-full"), ("other-lora", "other-full")}
    code, out, _ = bench("compare", "--task", "sst2", "--by", "model", "--format", "csv", "--results", store_root)
    assert code == 0
    assert [(r["a"], r["b"]) for r in csv.DictReader(io.StringIO(out))] == [("run-lora", "other-lora"),
                                                                           ("run-full", "other-full")]


def test_text_metrics_use_the_paired_bootstrap(bench, tmp_path):
    store = Store(tmp_path / "r")
    config = {"task": "samsum", "model": "m", "method": "lora", "preset": "quick", "seed": 0}
    for run_id, shift in (("t1", 0.0), ("t2", 0.1)):
        predictions = [Prediction(f"d{i}", -1, None, (), output="x", values={"rougeL": 0.2 + 0.01 * (i % 7) + shift * (i % 3)})
                       for i in range(40)]
        store.complete_stage(run_id, "finetuned", config=config, seconds=1.0,
                             metrics={"headline": "rougeL", "failures": 0, "rougeL": {"value": 0.3, "ci": [0, 1]}},
                             info={}, predictions=predictions)
    store.close()
    code, out, err = bench("compare", "t1", "t2", "--margin", "0.02", "--results", tmp_path / "r")
    assert code == 0, err
    assert "paired bootstrap" in out and "+0.098" in out and "different (p=<0.001)" in out
    assert "observed SD of the differences" in out


@pytest.mark.parametrize("args,message", [
    (("run-lora", "sam"), "'sam' is not a run"),
    (("run-lora", "run-full", "--margin", "-0.02"), "--margin -0.02: the equivalence margin must be a positive"),
    (("run-lora", "run-full", "--margin", "abc"), "--margin abc"),
    (("run-lora", "run-full", "--adjust", "bonferroni"), "--adjust bonferroni: unknown adjustment"),
    (("run-lora", "run-full", "--format", "xml"), "--format xml"),
    (("run-lora",), "needs two stages"),
    (("run-lora:baseline-head", "run-full"), "no stored stage 'baseline:head'"),
    (("run-lora:finetune", "run-full"), "no stored stage 'finetune'"),
    (("--task", "sst2", "--by", "seed"), "--by seed"),
    (("--by", "method"), "--by needs --task"),
])
def test_bad_input_is_one_error_line_and_leaves_the_store_alone(bench, store_root, args, message):
    before = fingerprint(store_root)
    code, out, err = bench("compare", *args, "--results", store_root)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert fingerprint(store_root) == before


def test_unpairable_stages_are_refused(bench, tmp_path):
    store = Store(tmp_path / "r")
    write_run(store, "s", before=[True] * 4, after=[True] * 4)
    write_run(store, "ag", task="ag_news", before=[True] * 4, after=[True] * 4)
    write_run(store, "far", before=[True] * 4, after=[True] * 4, ids=["z1", "z2", "z3", "z4"])
    write_run(store, "relabelled", before=[True] * 4, after=[True] * 4, gold=[0, 1, 1, 1])
    store.complete_stage("empty", "eval", config={"task": "sst2", "model": "m", "method": "eval", "preset": "quick"},
                         seconds=1.0, metrics=classification_metrics([True]), info={})
    store.close()
    before = fingerprint(tmp_path / "r")
    for other, message in (("ag", "s is task sst2 and ag is task ag_news"), ("far", "share no evaluated examples"),
                           ("relabelled", "disagree on the gold label of 1 shared examples (e.g. e0)"),
                           ("empty", "no stored predictions")):
        code, out, err = bench("compare", "s", other, "--results", tmp_path / "r")
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert fingerprint(tmp_path / "r") == before


def test_power_from_a_stored_run_and_from_the_worst_case(bench, store_root):
    from statsmodels.stats.power import TTestPower

    from harness.compare.power import required_n_accuracy

    code, out, err = bench("power", "sst2", "--delta", "0.02", "--from", "run-full", "--results", store_root)
    assert code == 0, err
    # run-full: baseline all wrong, fine-tuned right on 166 of 200 -> discordance 0.83
    assert out.startswith(f"sst2: {required_n_accuracy(0.02, 0.83)} eval examples detect a difference of 0.02 in "
                          "accuracy at 80% power")
    assert "discordance 0.83, observed in run-full (n 200, baseline:prompt vs finetuned)" in out
    code, out, _ = bench("power", "sst2", "--delta", "0.02")
    assert code == 0 and out.startswith(f"sst2: {required_n_accuracy(0.02, 0.5)} eval examples") and "worst case" in out
    code, out, _ = bench("power", "samsum", "--delta", "0.02")
    n = math.ceil(TTestPower().solve_power(effect_size=0.02 / 0.5, nobs=None, alpha=0.05, power=0.8))
    assert code == 0 and out.startswith(f"samsum: {n} eval examples") and "SD of the per-example differences 0.5" in out


@pytest.mark.parametrize("args,message", [
    (("sst2", "--delta", "-0.02"), "--delta -0.02: give the difference to detect as a positive number"),
    (("sst2", "--delta", "0.9", "--from", "run-full"), "is not below the discordance 0.83"),
    (("ag_news", "--delta", "0.02", "--from", "run-full"), "run run-full is task sst2, not ag_news"),
    (("sst2", "--delta", "0.02", "--from", "nope"), "'nope' is not in the store"),
])
def test_power_bad_input_is_one_error_line(bench, store_root, args, message):
    before = fingerprint(store_root)
    code, out, err = bench("power", *args, "--results", store_root)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert fingerprint(store_root) == before


def test_before_after_report_states_the_family_and_each_rows_mde(bench, store_root):
    code, out, err = bench("report", "--results", store_root)
    assert code == 0, err
    assert "| McNemar p | p adj (holm) |" in out
    assert "p adj: Holm (family-wise error rate) over a family of the 2 before/after comparisons in this report" in out
    assert ("MDE m lora vs prompt 0-shot: smallest Δaccuracy detectable at 80% power, α 0.05, given n 200 and the "
            "observed discordance 0.770") in out
    assert "over a family of the 2 leaderboard rows" in out
    code, out, _ = bench("report", "--results", store_root, "--adjust", "bh", "--format", "csv")
    assert code == 0 and "p_adjusted" in out.splitlines()[0] and ",bh," in out
    code, out, _ = bench("report", "--results", store_root, "--adjust", "none")
    assert code == 0 and "p adj" not in out and "not adjusted for multiple comparisons" in out
    code, out, err = bench("report", "--results", store_root, "--adjust", "sidak")
    assert code == 2 and err == "error: --adjust sidak: unknown adjustment; use holm (default), bh or none\n"


def test_prompt_scores_add_a_gold_label_probability_test(bench, tmp_path):
    """Same correctness on every example (McNemar sees nothing), but B puts more probability on
    the gold label: the secondary paired test shows it."""
    import math as m

    store = Store(tmp_path / "r")
    config = {"task": "sst2", "model": "m", "method": "eval", "preset": "quick", "seed": 0}
    for run_id, p_gold in (("low", 0.6), ("high", 0.7)):
        # prompt log-likelihoods of (negative, positive); gold positive; both always right
        predictions = [Prediction(f"e{i}", 1, 1, (m.log(1 - p_gold - 0.001 * (i % 5)), m.log(p_gold + 0.001 * (i % 5))))
                       for i in range(50)]
        store.complete_stage(run_id, "eval", config=config, seconds=1.0, metrics=classification_metrics([True] * 50),
                             info={"mode": "prompt"}, predictions=predictions)
    store.close()
    code, out, err = bench("compare", "low", "high", "--results", tmp_path / "r")
    assert code == 0, err
    assert "McNemar b=0 c=0" in out
    assert "gold-label probability (secondary paired test, lower variance than accuracy; n 50): 0.602 → 0.702, " \
           "Δ +0.100 [+0.100, +0.100], paired bootstrap p <0.001" in out


def test_no_flips_at_small_n_is_not_called_equivalent(bench, tmp_path):
    """Two stages that agree on all 30 examples: the paired t's SE is 0, which would make any n
    'equivalent'; counted as one discordant item, 30 examples cannot show ±0.02, 2000 can."""
    store = Store(tmp_path / "r")
    write_run(store, "few", before=[True] * 15 + [False] * 15, after=[True] * 15 + [False] * 15)
    write_run(store, "many", before=[True] * 1000 + [False] * 1000, after=[True] * 1000 + [False] * 1000)
    store.close()
    code, out, _ = bench("compare", "few:baseline", "few", "--margin", "0.02", "--results", tmp_path / "r")
    assert code == 0 and "inconclusive at this n" in out
    assert "given n 30 and the observed discordance 0.033: none: too few disagreements at this n" in out
    code, out, _ = bench("compare", "many:baseline", "many", "--margin", "0.02", "--results", tmp_path / "r")
    assert code == 0 and "equivalent within ±0.02 (p=<1e-4)" in out
