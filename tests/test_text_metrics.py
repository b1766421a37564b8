"""ROUGE, BLEU, METEOR and perplexity against published or hand-computed values.

Expected numbers never come from the code under test: BLEU from sacrebleu's README and the
BLEU formula worked by hand, ROUGE from counted n-grams/LCS, METEOR from NLTK's docstring and
its formula. METEOR needs WordNet; without it those tests skip and say how to get it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.errors import BenchError
from harness.metrics import text
from harness.metrics.perplexity import perplexity_from_totals
from harness.metrics.text import (
    LEXNAMES,
    WORDNET_FILES,
    bleu_from_stats,
    bleu_scores,
    build_wordnet,
    lexnames_text,
    load_wordnet,
    meteor_scores,
    rouge_scores,
    split_sentences,
    text_report,
    word_tokenize,
)

# sacrebleu README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
README_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFS = [
    ["The dog bit the man.", "The dog had bit the man."],
    ["It was not unexpected.", "No one was surprised."],
    ["The man bit him first.", "The man had bitten the dog."],
]


# ------------------------------------------------------------------ BLEU


def test_bleu_matches_sacrebleu_readme_example():
    # 13a tokens: 6 + 4 + 7 = 17 hypothesis tokens; closest refs 6 + 5 + 7 = 18.
    # Matches per order 14/17, 7/14, 5/11, 3/8; BP = exp(1 - 18/17).
    precisions = [14 / 17, 7 / 14, 5 / 11, 3 / 8]
    bp = math.exp(1 - 18 / 17)
    expected = 100 * bp * math.exp(sum(math.log(p) for p in precisions) / 4)
    out = bleu_scores(README_SYS, README_REFS)
    assert out["score"] == pytest.approx(expected, abs=1e-9)
    assert round(out["score"], 2) == 48.53  # the README's printed value
    assert out["precisions"] == pytest.approx([100 * p for p in precisions])
    assert out["bp"] == pytest.approx(bp)
    assert out["length_ratio"] == pytest.approx(17 / 18)
    assert (out["sys_len"], out["ref_len"]) == (17, 18)


def test_summed_example_stats_reproduce_corpus_bleu():
    """The bootstrap recomputes corpus BLEU from per-example stats; that must be exact."""
    out = bleu_scores(README_SYS, README_REFS)
    totals = [sum(col) for col in zip(*out["stats"])]
    assert totals[:2] == [17, 18]
    assert bleu_from_stats(totals) == pytest.approx(out["score"], abs=1e-9)
    # No 4-gram matches anywhere: corpus BLEU's "exp" smoothing must be applied here too.
    # 1-4 gram matches 8/10, 4/8, 2/6, 0/4 -> 1/(2*4); equal lengths, BP = 1.
    zero4 = bleu_scores(["the cat sat on mat", "a dog ran to park"],
                        ["the cat sat in mat", "a dog ran at park"])
    expected = 100 * (8 / 10 * 4 / 8 * 2 / 6 * 1 / 8) ** 0.25
    assert zero4["score"] == pytest.approx(expected)
    assert bleu_from_stats([sum(col) for col in zip(*zero4["stats"])]) == pytest.approx(expected)


def test_sentence_bleu_by_hand():
    # "the cat sat on the mat" vs "the cat sat on a mat": 5/6, 3/5, 2/4, 1/3, equal lengths.
    no_smoothing = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    # "the cat sat on mat" vs "the cat sat in mat": 4/5, 2/4, 1/3, 0/2; sacrebleu's "exp"
    # smoothing replaces the first zero precision by 1 / (2 * total) = 1/4.
    smoothed = 100 * (4 / 5 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25
    out = bleu_scores(
        ["the cat sat on the mat", "the cat sat on mat", "a b c d"],
        ["the cat sat on a mat", "the cat sat in mat", "e f g h"],
    )
    assert out["per_example"] == pytest.approx([no_smoothing, smoothed, 0.0])


def test_bleu_accepts_a_varying_number_of_references():
    out = bleu_scores(["the cat sat on the mat", "a dog ran far away"],
                      [["a cat was on the mat", "the cat sat on the mat"], "a dog ran far away"])
    assert out["score"] == pytest.approx(100.0)
    assert out["bp"] == pytest.approx(1.0)


# ------------------------------------------------------------------ ROUGE


def test_rouge_on_a_counted_pair():
    # unigrams the/cat shared of 3 each; bigram "the cat" shared of 2 each; LCS "the cat" = 2.
    out = rouge_scores(["the cat sat"], ["the cat ran"])
    assert out["rouge1"]["per_example"] == pytest.approx([2 / 3])
    assert out["rouge2"]["per_example"] == pytest.approx([1 / 2])
    assert out["rougeL"]["per_example"] == pytest.approx([2 / 3])
    assert out["rougeLsum"]["per_example"] == pytest.approx([2 / 3])


def test_rouge_uses_the_porter_stemmer():
    # cats->cat, running->run, runs->run: 3 of 4 predicted, 3 of 3 reference unigrams match.
    p, r = 3 / 4, 3 / 3
    out = rouge_scores(["the cats are running"], ["the cat runs"])
    assert out["rouge1"]["mean"] == pytest.approx(2 * p * r / (p + r))


def test_rouge_lsum_splits_sentences_where_rouge_l_does_not():
    # Swapped sentences: whole-text LCS is 3 of 6 tokens, but each reference sentence is
    # covered in full by the union LCS over predicted sentences.
    pred, ref = "Cats purr loudly. Dogs bark often.", "Dogs bark often. Cats purr loudly."
    assert split_sentences(pred) == ["Cats purr loudly.", "Dogs bark often."]
    out = rouge_scores([pred], [ref])
    assert out["rougeL"]["mean"] == pytest.approx(0.5)
    assert out["rougeLsum"]["mean"] == pytest.approx(1.0)


def test_rouge_takes_the_best_reference_and_means_over_examples():
    out = rouge_scores(["the cat sat", "the cat sat"], [["a dog ran", "the cat sat"], "a dog ran"])
    assert out["rouge1"]["per_example"] == pytest.approx([1.0, 0.0])
    assert out["rouge1"]["mean"] == pytest.approx(0.5)


def test_regex_splitter_used_without_nupunkt(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(text, "_nupunkt_sent_tokenize", None)
    assert split_sentences("Cats purr loudly. Dogs bark often.") == ["Cats purr loudly.", "Dogs bark often."]
    assert split_sentences('He said "Stop!" Then 3 left? yes.') == ['He said "Stop!"', "Then 3 left? yes."]
    assert rouge_scores(["Cats purr loudly. Dogs bark often."],
                        ["Dogs bark often. Cats purr loudly."])["rougeLsum"]["mean"] == pytest.approx(1.0)


def test_newlines_always_end_sentences():
    assert split_sentences("first line\n\n second line ") == ["first line", "second line"]
    assert split_sentences("") == []


# ------------------------------------------------------------------ report


def test_text_report_shape_failures_and_determinism():
    preds = ["the cat sat on the mat", None, "a dog ran in the park", "the cat sat"]
    refs = ["the cat sat on the mat", "a bird flew", "a dog ran in the garden", "the cat ran"]
    report = text_report(preds, refs, meteor=False, resamples=200, seed=3)
    assert report["n"] == 4 and report["failures"] == 1
    assert "meteor" not in report
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"):
        lo, hi = report[key]["ci"]
        assert lo <= report[key]["value"] <= hi, key
    assert report["per_example"]["rouge1"][1] == 0.0  # the failure scores as empty output
    assert report["rouge1"]["value"] == pytest.approx(sum(report["per_example"]["rouge1"]) / 4)
    assert len(report["per_example"]["bleu"]) == 4
    assert report["bleu"]["sys_len"] == 6 + 0 + 6 + 3
    assert json.loads(json.dumps(report)) == report
    assert text_report(preds, refs, meteor=False, resamples=200, seed=3) == report


def test_text_report_without_resamples_collapses_cis():
    report = text_report(["the cat sat"], ["the cat ran"], meteor=False, resamples=0)
    assert report["rouge1"]["ci"] == [pytest.approx(2 / 3)] * 2
    assert report["bleu"]["ci"][0] == report["bleu"]["ci"][1] == report["bleu"]["value"]


@pytest.mark.parametrize(
    "preds, refs",
    [(["a"], ["a", "b"]), ([], []), ("abc", "abc"), (["a"], [[]])],
)
def test_bad_inputs_are_rejected(preds, refs):
    with pytest.raises(ValueError):
        rouge_scores(preds, refs)


# ------------------------------------------------------------------ METEOR and WordNet


@pytest.fixture(scope="module")
def wordnet():
    try:
        return load_wordnet()
    except BenchError as exc:
        pytest.skip(f"WordNet unavailable, METEOR not tested: {exc}")


def test_meteor_matches_nltk_docstring_example(wordnet):
    hypothesis1 = ("It is a guide to action which ensures that the military always obeys the "
                   "commands of the party")
    reference1 = ("It is a guide to action that ensures that the military will forever heed "
                  "Party commands")
    out = meteor_scores([hypothesis1], [reference1])
    assert round(out["per_example"][0], 4) == 0.6944  # nltk's documented value


def test_meteor_matches_synonyms_through_wordnet(wordnet):
    # sofa/couch share a synset and survive Porter stemming. All 6 unigrams match in one
    # chunk: P = R = Fmean = 1, penalty = 0.5 * (1/6)^3. Exact-only would give 5/6 * (1 - 0.5/125).
    out = meteor_scores(["the cat sat on the sofa"], ["the cat sat on the couch"])
    assert out["per_example"][0] == pytest.approx(1 - 0.5 / 216)
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"  # lexnames numbered right
    assert wordnet.synset("run.v.01").lexname() == "verb.motion"


def test_meteor_in_text_report(wordnet):
    report = text_report(["the cat sat on the sofa", ""], ["the cat sat on the couch", "a b"], resamples=50)
    assert report["meteor"]["value"] == pytest.approx((1 - 0.5 / 216) / 2)
    assert report["per_example"]["meteor"][1] == 0.0


def test_word_tokenize_needs_no_punkt():
    assert word_tokenize("It wasn't surprising. Was it?") == [
        "It", "was", "n't", "surprising", ".", "Was", "it", "?"
    ]


# WordNet 3.0's lexnames(5WN) table, in file-number order.
WORDNET_LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact
noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling noun.food
noun.group noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant
noun.possession noun.process noun.quantity noun.relation noun.shape noun.state noun.substance
noun.time verb.body verb.change verb.cognition verb.communication verb.competition
verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception
verb.possession verb.social verb.stative verb.weather adj.ppl""".split()


def test_lexnames_file_has_the_45_wordnet_lexicographer_files():
    lines = [line.split("\t") for line in lexnames_text().splitlines()]
    assert len(lines) == 45 == len(set(LEXNAMES))
    assert [name for _, name, _ in lines] == WORDNET_LEXNAMES
    assert [int(num) for num, _, _ in lines] == list(range(45))
    assert lines[0] == ["00", "adj.all", "3"] and lines[44] == ["44", "adj.ppl", "3"]
    pos = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}
    assert all(p == pos[name.split(".")[0]] for _, name, p in lines)


def test_build_wordnet_copies_the_dict_and_adds_lexnames(tmp_path: Path):
    source = tmp_path / "dict"
    source.mkdir()
    for name in WORDNET_FILES:
        (source / name).write_text(f"fake {name}\n")
    target = build_wordnet(source, tmp_path / "nltk_data")
    assert target == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (target / "data.noun").read_text() == "fake data.noun\n"
    assert (target / "lexnames").read_text() == lexnames_text()
    assert not any(p.name.startswith(".wordnet-") for p in target.parent.iterdir())


def test_missing_wordnet_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nltk

    def not_found(*args, **kwargs):
        raise LookupError("no wordnet")

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "empty"))
    with pytest.raises(BenchError, match="apt-get install -y wordnet-base wordnet-sense-index"):
        text.load_wordnet()


# ------------------------------------------------------------------ perplexity


def test_perplexity_is_token_weighted():
    # (1 + 6) nats over 4 tokens; the unweighted mean of per-example means would be exp(1.5).
    assert perplexity_from_totals([(1.0, 1), (6.0, 3)]) == pytest.approx(math.exp(7 / 4))
    assert perplexity_from_totals([(1e6, 1)]) == math.inf


@pytest.mark.parametrize("pairs", [[], [(1.0, 0)], [(1.0, -1)], [(-1.0, 2)], [(float("nan"), 2)]])
def test_perplexity_rejects_bad_input(pairs):
    with pytest.raises(ValueError):
        perplexity_from_totals(pairs)


def test_language_model_stage_reports_token_weighted_nll_with_a_ci_around_it():
    """One 1,000-token document at 2 nats/token and three 10-token ones at 1: NLL per token is
    2030/1030 = 1.97087, and its CI must resample the same ratio (an unweighted bootstrap of the
    per-document values would put it near 1.25, excluding the value)."""
    from harness.kinds import LanguageModel
    from harness.kinds.scoring_helpers import score_stage
    from harness.task.spec import HubData, TaskSpec
    from harness.types import Example, Prediction

    spec = TaskSpec(HubData("x", "x"), LanguageModel(), "")
    examples = [Example(str(i), ("one two three " * 20,), -1) for i in range(4)]
    totals = [(2000.0, 1000), (10.0, 10), (10.0, 10), (10.0, 10)]
    predictions = [Prediction(str(i), -1, None, total, output="one two") for i, total in enumerate(totals)]
    report, _ = score_stage(spec, examples, predictions, seed=0)
    value, (low, high) = report["nll_per_token"]["value"], report["nll_per_token"]["ci"]
    assert value == pytest.approx(2030 / 1030) and low <= value <= high
    assert report["perplexity"]["value"] == pytest.approx(math.exp(2030 / 1030))
