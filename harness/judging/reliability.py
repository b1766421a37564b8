"""Can this judge judge? Numbers that show a judge answering by position or by rote, and the
verdict that its numbers are unusable when one of them crosses a line.

A judge that always answers "A" flips every pairwise verdict when the two responses swap places,
so every item becomes a tie and the win rate sits at exactly 0.5 with a zero-width interval: it
looks certain while it measures nothing. A judge that gives every response the same score makes
every score delta 0 the same way. These numbers go with every judge table so such a judge is
called out instead of read as a result.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

# Over this share of pairs whose verdict changes when the two responses swap places, the verdicts
# follow the position more often than the content: the pairwise numbers measure the judge.
FLIP_LIMIT = 0.5
VERDICTS = ("A", "B", "tie")
SCORES, WIN_RATE = "scores", "win rate"  # the parts of a judgment a problem makes meaningless


class Problem(NamedTuple):
    part: str  # SCORES or WIN_RATE
    reason: str


def measure(table: Mapping[tuple[str, str, int, int], Any], samples: int) -> dict[str, Any]:
    """Spread and consistency of the answers in `table` ((kind, side, item, sample) -> Answer):
    which verdicts the judge gave, how many distinct scores, and (with repeats) how often the
    samples of one question agree exactly."""
    verdicts = [a.value for key, a in table.items() if key[0] == "pairwise" and a.value is not None]
    scores = [(key[2], float(a.value)) for key, a in table.items() if key[0] == "single" and a.value is not None]
    result: dict[str, Any] = {}
    if verdicts:
        result["verdicts"] = len(verdicts)
        result["said"] = {v: verdicts.count(v) / len(verdicts) for v in VERDICTS}
    if scores:
        values = [value for _, value in scores]
        result.update(scores=len(values), scored_items=len({item for item, _ in scores}),
                      distinct_scores=len(set(values)), score_min=min(values), score_max=max(values),
                      score_sd=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    if samples > 1:
        asked: dict[tuple[str, str, int], list[Any]] = {}
        for (kind, side, item, _), answer in table.items():
            if answer.value is not None:
                asked.setdefault((kind, side, item), []).append(answer.value)
        repeated = [values for values in asked.values() if len(values) > 1]
        if repeated:
            result["repeats"] = len(repeated)
            result["repeat_agreement"] = sum(len(set(values)) == 1 for values in repeated) / len(repeated)
    return result


def tie_share(pairwise: Mapping[str, Any] | None) -> float | None:
    """Share of judged items whose pairwise outcome is a tie (a flipped verdict is one)."""
    if not pairwise or not pairwise.get("n_judged"):
        return None
    return pairwise["ties"] / pairwise["n_judged"]


def problems(metrics: Mapping[str, Any]) -> list[Problem]:
    """Why parts of this judgment are unusable, one reason each; empty when no line is crossed."""
    found = []
    flip_rate = (metrics.get("pairwise") or {}).get("flip_rate")
    if flip_rate is not None and not math.isnan(flip_rate) and flip_rate > FLIP_LIMIT:
        found.append(Problem(WIN_RATE, f"its verdict changes when the two responses swap places in {flip_rate:.0%} "
                                       f"of pairs (over {FLIP_LIMIT:.0%}): it answers by position, not by content"))
    measured = metrics.get("reliability") or {}
    said = measured.get("said") or {}
    for position, where in (("A", "first"), ("B", "second")):
        if measured.get("verdicts", 0) > 1 and said.get(position) == 1.0:
            found.append(Problem(WIN_RATE, f'every pairwise verdict ({measured["verdicts"]}) is "{position}", the '
                                           f"response shown {where}, whichever response that was"))
    if measured.get("scored_items", 0) > 1 and measured.get("distinct_scores") == 1:
        found.append(Problem(SCORES, f"every response of every item got the same score ({measured['score_min']:g}), "
                                     "so no score can tell one response from another"))
    return found


def unusable_parts(found: Sequence[Problem]) -> str:
    """"scores", "win rate" or "scores and win rate": what the problems make meaningless."""
    return " and ".join(sorted({problem.part for problem in found}))
