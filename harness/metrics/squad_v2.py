"""SQuAD v2.0 exact match and F1, re-implemented from the official evaluate-v2.0.py logic.

Kept faithful to the official script (normalisation, max over gold answers, the "" gold for
unanswerable questions, the no-answer threshold and the best-threshold sweep) so numbers are
comparable with published ones, with two deliberate differences:

- inputs are aligned lists instead of JSON files keyed by question id, and per-example scores
  are returned for paired tests;
- a failed generation (None) scores 0 everywhere. The official script skips a missing
  prediction, which would reward a model for failing, and an empty string would be *correct*
  on every unanswerable question.

Aggregates are percentages (0..100) as in the official output; per-example scores are 0..1.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import overload

import numpy as np

from harness.compare.stats import bootstrap_ci

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)

# Whole outputs (after normalize_answer) that mean "there is no answer". Whole-output match
# only, so an answer that merely contains these words is never erased.
NO_ANSWER_PHRASES = frozenset(
    {
        "",
        "unanswerable",
        "no answer",
        "no answer found",
        "no answer available",
        "not answerable",
        "cannot be answered",
        "can not be answered",
        "cant be answered",
        "cannot answer",
        "cant answer",
        "question is unanswerable",
        "this question is unanswerable",
        "question cannot be answered",
        "this question cannot be answered",
    }
)
# "N/A", "n/a", "n.a." but not a bare "Na": that is sodium, a real answer.
_NOT_APPLICABLE = re.compile(r"^\s*n\s*[/.]\s*a\s*\.?\s*$", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """Official normalisation: lower, drop punctuation, drop a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(gold: str, prediction: str) -> int:
    """1 when the normalised strings are equal."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    """Bag-of-tokens F1 of normalised answers; when either is empty, 1 only if both are."""
    gold_toks = normalize_answer(gold).split() if gold else []
    pred_toks = normalize_answer(prediction).split() if prediction else []
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_toks)
    recall = same / len(gold_toks)
    return 2.0 * precision * recall / (precision + recall)


@overload
def normalize_no_answer(text: str, extra: Iterable[str] = ()) -> str: ...


@overload
def normalize_no_answer(text: None, extra: Iterable[str] = ()) -> None: ...


def normalize_no_answer(text: str | None, extra: Iterable[str] = ()) -> str | None:
    """Map a generated "there is no answer" ("Unanswerable.", "N/A", ...) to "", else keep `text`.

    Generative models rarely emit the empty string SQuAD v2 expects for "no answer"; this maps
    their phrasings to it, case- and punctuation-insensitively. `extra` adds phrases.
    None (a failure) is returned as None: a failure is not an abstention.
    """
    if text is None:
        return None
    norm = normalize_answer(text)
    if (
        norm in NO_ANSWER_PHRASES
        or _NOT_APPLICABLE.match(text)
        or norm in {normalize_answer(e) for e in extra}
    ):
        return ""
    return text


def squad_v2_scores(
    predictions: Sequence[str | None],
    references: Sequence[Sequence[str]],
    na_probs: Sequence[float] | None = None,
    *,
    na_prob_thresh: float = 1.0,
) -> dict:
    """The official SQuAD v2 result dict plus failures and per-example exact/f1 (0..1).

    references[i] lists the gold answer texts of question i; an empty list marks it
    unanswerable. na_probs[i] is the model's probability that i has no answer; without them it
    is 0 for every question, as in the official script, so no threshold changes an answer. An
    example whose na_prob exceeds na_prob_thresh counts as answered "no answer" (official
    default 1.0: never). best_exact/best_f1 are the scores at the best such threshold, and
    those thresholds: only with given na_probs (a sweep over equal probabilities would cut
    between ties, which no real threshold can).
    """
    preds, golds, has_ans, probs = _validate(predictions, references, na_probs)
    failed = [p is None for p in predictions]
    rows = list(zip(preds, golds, failed))
    exact_raw = [0.0 if f else float(max(exact_match(g, p) for g in gl)) for p, gl, f in rows]
    f1_raw = [0.0 if f else max(token_f1(g, p) for g in gl) for p, gl, f in rows]

    def thresholded(raw: list[float]) -> list[float]:
        return [
            0.0 if f else (float(not h) if q > na_prob_thresh else s)
            for s, q, h, f in zip(raw, probs, has_ans, failed)
        ]

    exact = thresholded(exact_raw)
    f1 = thresholded(f1_raw)
    out: dict = _eval_dict(exact, f1, range(len(preds)))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [i for i, h in enumerate(has_ans) if h == wanted]
        if ids:
            out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, ids).items()})
    for name, raw in (("exact", exact_raw), ("f1", f1_raw)) if na_probs is not None else ():
        best, thresh = _find_best_thresh(preds, raw, probs, has_ans, failed)
        out[f"best_{name}"] = best
        out[f"best_{name}_thresh"] = thresh
    out["failures"] = sum(failed)
    out["per_example"] = {"exact": exact, "f1": f1}
    return out


def squad_v2_report(
    predictions: Sequence[str | None],
    references: Sequence[Sequence[str]],
    na_probs: Sequence[float] | None = None,
    *,
    na_prob_thresh: float = 1.0,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """squad_v2_scores with exact/f1 (overall, HasAns, NoAns) as {"value", "ci"}, 95% bootstrap.

    HasAns/NoAns CIs resample within their subset, keeping its size fixed. Percentages.
    """
    scores = squad_v2_scores(predictions, references, na_probs, na_prob_thresh=na_prob_thresh)
    has_ans = [bool(r) for r in references]
    subsets: dict[str, list[int]] = {"": list(range(len(has_ans)))}
    subsets["HasAns_"] = [i for i, h in enumerate(has_ans) if h]
    subsets["NoAns_"] = [i for i, h in enumerate(has_ans) if not h]
    report = dict(scores)
    for prefix, ids in subsets.items():
        if not ids:
            continue
        for metric in ("exact", "f1"):
            values = [scores["per_example"][metric][i] for i in ids]
            lo, hi = bootstrap_ci(values, resamples=resamples, seed=seed)
            report[prefix + metric] = {"value": scores[prefix + metric], "ci": [100.0 * lo, 100.0 * hi]}
    return report


def _eval_dict(exact: list[float], f1: list[float], ids: Iterable[int]) -> dict:
    ids = list(ids)
    return {
        "exact": 100.0 * float(np.sum([exact[i] for i in ids])) / len(ids),
        "f1": 100.0 * float(np.sum([f1[i] for i in ids])) / len(ids),
        "total": len(ids),
    }


def _find_best_thresh(
    preds: list[str], raw: list[float], probs: list[float], has_ans: list[bool], failed: list[bool]
) -> tuple[float, float]:
    """Official sweep: start with every question abstaining, then answer them in na_prob order.

    Answering a HasAns question gains its score; answering a NoAns one with a non-empty string
    loses the abstention's point. Failures are worth 0 at every threshold (so a NoAns failure
    is not credited as an abstention). Ties keep input order, as the official sorted() does.
    """
    score = float(sum(1 for h, f in zip(has_ans, failed) if not h and not f))
    best, best_thresh = score, 0.0
    for i in sorted(range(len(preds)), key=lambda k: probs[k]):
        if failed[i]:
            diff = 0.0
        elif has_ans[i]:
            diff = raw[i]
        else:
            diff = -1.0 if preds[i] else 0.0
        score += diff
        if score > best:
            best, best_thresh = score, probs[i]
    return 100.0 * best / len(preds), float(best_thresh)


def _validate(
    predictions: Sequence[str | None],
    references: Sequence[Sequence[str]],
    na_probs: Sequence[float] | None,
) -> tuple[list[str], list[list[str]], list[bool], list[float]]:
    """Aligned lists: predictions ("" for failures), gold lists ([""] when none), has_ans, na_probs."""
    n = len(predictions)
    if n == 0:
        raise ValueError("squad_v2 needs at least one example")
    if len(references) != n:
        raise ValueError(f"{n} predictions but {len(references)} references")
    if any(isinstance(r, str) for r in references):
        raise ValueError("each reference must be a list of gold answer texts ([] if unanswerable)")
    preds = ["" if p is None else str(p) for p in predictions]
    # Official: golds that normalise to "" are dropped, and none left means the "" gold, while
    # "has an answer" is decided by the raw list being non-empty.
    golds = [[a for a in r if normalize_answer(a)] or [""] for r in references]
    has_ans = [bool(r) for r in references]
    if na_probs is None:
        probs = [0.0] * n
    else:
        if len(na_probs) != n:
            raise ValueError(f"{n} predictions but {len(na_probs)} na_probs")
        probs = [float(q) for q in na_probs]
        if not all(np.isfinite(probs)):
            raise ValueError("na_probs contains non-finite values")
    return preds, golds, has_ans, probs
