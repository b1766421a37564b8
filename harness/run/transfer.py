"""Evaluating a classification checkpoint on another task (sst2 -> imdb): the transfer question.

Allowed where the two label sets are the same (same names, same order), or with an explicit
`--label-map SOURCE=TARGET,...` naming a target label for every label the checkpoint predicts.
The checkpoint predicts over its own labels (its head's outputs, or the verbalizers its LM
objective learned, scored after the target task's prompt); each target label's score gathers the
scores of the source labels mapped to it (probabilities summed, log-likelihoods log-sum-exp'd),
and the prediction is the best target label.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from harness.errors import BenchError
from harness.kinds import kind_named
from harness.task.spec import TaskSpec
from harness.types import Prediction


@dataclass(frozen=True)
class Transfer:
    source_task: str
    target_task: str
    source_labels: tuple[str, ...]
    target_labels: tuple[str, ...]
    targets: tuple[int, ...]  # for each source label, the index of its target label
    how: str  # "same labels" | "--label-map"
    source_verbalizers: tuple[str, ...] = ()  # what an LM-objective checkpoint learned to answer

    @property
    def label_map(self) -> dict[str, str]:
        return {source: self.target_labels[t] for source, t in zip(self.source_labels, self.targets)}

    @property
    def digest(self) -> str:
        """Names the eval record: another map of the same checkpoint is another evaluation."""
        text = f"{self.source_task}>{self.target_task}:" + ",".join(f"{s}={t}" for s, t in self.label_map.items())
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def record(self) -> dict[str, Any]:
        return {"source_task": self.source_task, "target_task": self.target_task, "how": self.how,
                "label_map": self.label_map}

    def describe(self) -> str:
        """`transfer sst2 -> imdb (same labels)`, or the map when one was given."""
        detail = "same labels" if self.how == "same labels" else "label map " + ", ".join(
            f"{s}={t}" for s, t in self.label_map.items())
        return f"transfer {self.source_task} -> {self.target_task} ({detail})"


def parse_label_map(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        source, equals, target = part.partition("=")
        if not part or not equals or not source.strip() or not target.strip():
            raise BenchError(f"--label-map {text!r}: give SOURCE=TARGET pairs separated by commas, e.g. "
                             "--label-map negative=negative,positive=positive")
        pairs.append((source.strip(), target.strip()))
    return pairs


def plan_transfer(meta: Mapping[str, Any], spec: TaskSpec, label_map: str | None, refusal: str) -> Transfer:
    """The transfer from the checkpoint's task (meta) to `spec`, or one error line: `refusal` (the
    line saying which task the checkpoint was trained on), and why the labels do not carry over."""
    source_labels = tuple(str(label) for label in meta.get("labels") or ())
    source_kind = kind_named(meta.get("kind"))
    if source_kind is None or source_kind.head != "classifier" or spec.kind.head != "classifier" or not source_labels:
        raise BenchError(f"{refusal}; only classification checkpoints transfer to another classification task")
    target_labels = tuple(spec.kind.labels)  # type: ignore[attr-defined]
    verbalizers = tuple(meta.get("verbalizers") or (" " + label for label in source_labels))
    common = dict(source_task=str(meta["task"]), target_task=spec.key, source_labels=source_labels,
                  target_labels=target_labels, source_verbalizers=verbalizers)
    if label_map is None:
        if source_labels != target_labels:
            example = ",".join(f"{s}={target_labels[min(i, len(target_labels) - 1)]}"
                               for i, s in enumerate(source_labels))
            raise BenchError(f"{refusal}; its labels ({', '.join(source_labels)}) are not {spec.key}'s "
                             f"({', '.join(target_labels)}): to evaluate the transfer, map each to one of "
                             f"{spec.key}'s with --label-map, e.g. --label-map {example}")
        return Transfer(**common, targets=tuple(range(len(source_labels))), how="same labels")
    pairs = parse_label_map(label_map)
    given = dict(pairs)
    unknown = [s for s, _ in pairs if s not in source_labels]
    twice = [s for i, (s, _) in enumerate(pairs) if s in [p for p, _ in pairs[:i]]]
    missing = [s for s in source_labels if s not in given]
    wrong = [t for _, t in pairs if t not in target_labels]
    problem = (f"{unknown[0]!r} is not a label of the checkpoint's task {meta['task']}" if unknown else
               f"{twice[0]!r} is mapped twice" if twice else
               f"{', '.join(map(repr, missing))} not mapped (every label the checkpoint predicts needs a target)"
               if missing else f"{wrong[0]!r} is not a label of {spec.key}" if wrong else "")
    if problem:
        raise BenchError(f"--label-map: {problem}; map each of {meta['task']}'s labels ({', '.join(source_labels)}) "
                         f"to one of {spec.key}'s ({', '.join(target_labels)})")
    return Transfer(**common, targets=tuple(target_labels.index(given[s]) for s in source_labels), how="--label-map")


def source_view(spec: TaskSpec, transfer: Transfer) -> TaskSpec:
    """The target task as the checkpoint predicts it: the target's prompt and fields, the source's
    labels and verbalizers (a head has one output per source label; an LM learned those words)."""
    kind = dataclasses.replace(spec.kind, labels=transfer.source_labels, verbalizers=transfer.source_verbalizers)
    return dataclasses.replace(spec, kind=kind)


def to_target(predictions: Sequence[Prediction], transfer: Transfer, mode: str) -> list[Prediction]:
    """Source-label predictions as target-label ones: each target's score gathers its source labels'
    (head probabilities summed; prompt log-likelihoods log-sum-exp'd), the best target wins. A
    target no source label maps to scores 0 (probability) or -inf (log-likelihood)."""
    mapped = []
    for p in predictions:
        if p.label is None:  # not scored: stays a failure
            mapped.append(dataclasses.replace(p, scores=tuple(math.nan for _ in transfer.target_labels)))
            continue
        scores = [_gather([p.scores[s] for s, t in enumerate(transfer.targets) if t == target], mode)
                  for target in range(len(transfer.target_labels))]
        best = max(range(len(scores)), key=lambda k: scores[k])
        mapped.append(dataclasses.replace(p, label=best, scores=tuple(round(s, 6) if math.isfinite(s) else s
                                                                      for s in scores)))
    return mapped


def _gather(values: list[float], mode: str) -> float:
    if mode == "head":
        return float(sum(values))
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
