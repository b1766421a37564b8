"""Strict parsing of judge replies. A reply that does not say one clear thing is unparseable
(None), never a default: a missing score must stay missing, not become 0 or 50."""
from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}")
# a score out of another total ("8/10", "8 out of 10") is not a 0-100 score: no match
_SCORE_FIELD = re.compile(r"""(?i)(?<![a-z])"?score"?\s*[:=]\s*"?(-?\d+(?:\.\d+)?)\b(?!\.\d)"""
                          r"""(?!\s*(?:/|out\s+of)\s*(?!100\b)\d)""")
_BARE_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100)?\s*\.?\s*$")
_WINNER_FIELD = re.compile(r"""(?i)"?winner"?\s*[:=]\s*"?\s*(A|B|tie)\b""")
_BARE_VERDICT = re.compile(r"""(?i)^\s*(?:\[\[)?\s*"?(A|B|tie)"?\s*(?:\]\])?\s*\.?\s*$""")
_REASONING = re.compile(r"(?is)<(think|thinking|reasoning)>.*?</\1>")
_OPEN_REASONING = re.compile(r"(?i)<(think|thinking|reasoning)>")


def _answer_part(text: str) -> str:
    """The reply without a reasoning model's thinking block (<think>...</think>): a draft score
    weighed there is not the answer. Thinking that never closed (cut at the token limit) leaves
    no answer at all."""
    answer = _REASONING.sub("", text)
    return "" if _OPEN_REASONING.search(answer) else answer


def _json_fields(text: str) -> list[dict[str, Any]]:
    """Every JSON object in the reply: the whole reply, a fenced block, or objects inside prose."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    found = []
    for candidate in [body] + _OBJECT.findall(body):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _one(values: list[Any]) -> Any | None:
    """The value, when the reply states exactly one (repeats of the same value are fine)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else None


def parse_score(text: str, low: float = 0.0, high: float = 100.0) -> float | None:
    """The score in [low, high], or None when there is none, several disagree, or it is out of range."""
    text = _answer_part(text)
    scores: list[float] = []
    for obj in _json_fields(text):
        value = obj.get("score")
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            scores.append(float(value))
        elif isinstance(value, str) and (number := _BARE_NUMBER.match(value)):
            scores.append(float(number.group(1)))  # "85", "85/100", "85 / 100."
    scores += [float(m) for m in _SCORE_FIELD.findall(text)]  # also catches a second score in prose
    if not scores:
        bare = _BARE_NUMBER.match(text)
        scores = [float(bare.group(1))] if bare else []
    score = _one(scores)
    if score is None or not low <= score <= high:
        return None
    return score


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie', or None."""
    text = _answer_part(text)
    verdicts = [str(obj["winner"]).strip() for obj in _json_fields(text) if "winner" in obj]
    verdicts += _WINNER_FIELD.findall(text)
    if not verdicts:
        bare = _BARE_VERDICT.match(text)
        verdicts = [bare.group(1)] if bare else []
    normal = [{"a": "A", "b": "B", "tie": "tie"}.get(v.lower()) for v in verdicts]
    return _one(normal) if None not in normal else None
