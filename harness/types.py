"""The values that flow between stages. Frozen: a stage never edits what it was given."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One eval or train item: its source id and the task's text fields, plus what is right:
    a label index (classification) or reference texts (generation; for extractive QA the gold
    answers, empty when the question is unanswerable, with their character offsets)."""

    id: str
    texts: tuple[str, ...]
    label: int = -1
    references: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    group: str = ""  # rows of one group (e.g. one article) stay in one split when splits are carved
    cluster: str = ""  # short hash of the task's cluster column: items sharing it are not independent


@dataclass(frozen=True)
class Splits:
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    eval: tuple[Example, ...]
    # Human-readable provenance ("train carved from test, seed 0"), shown under every table.
    notes: tuple[str, ...] = ()
    # sha256 of the source files read, so a record says exactly which data produced it.
    source_hashes: dict[str, str] = field(default_factory=dict)
    # Where few-shot demonstrations come from: the training rows before validation is carved and
    # train is sampled, so the demonstrations (and the baseline) do not move with those sizes.
    demo_pool: tuple[Example, ...] = ()

    @property
    def demos_from(self) -> tuple[Example, ...]:
        return self.demo_pool or self.train


@dataclass(frozen=True)
class Prediction:
    """A scored example. `label` is None when a classification example could not be scored (a
    failure). Text tasks keep the model's `output` (None = failure); `values` holds the
    per-example metric values computed from it (recomputed by `bench rescore`)."""

    example_id: str
    gold: int
    label: int | None
    # What the model measured: per-label log-likelihoods (prompt) or probabilities (head); for
    # language modelling (nll sum, tokens); for span QA the no-answer score.
    scores: tuple[float, ...]
    output: str | None = None
    values: dict[str, float] | None = None
    # The example's cluster key (Example.cluster), stored with it so tables can cluster their
    # errors without the data; None when the task declares no clusters or the run predates them.
    cluster: str | None = None


@dataclass(frozen=True)
class TrainItem:
    """One training sequence: token ids and either a class index or per-token LM targets."""

    input_ids: list[int]
    label: int | None = None
    lm_labels: list[int] | None = None  # -100 where the loss is masked (the prompt)
    span: tuple[int, int] | None = None  # extractive QA: answer start/end token (0, 0 = no answer)
    token_type_ids: list[int] | None = None  # segment ids for encoders that use them (BERT pairs)


# What a stage's work returns: predictions, metrics, info, curves (scoring and storing are the
# pipeline's).
StageOutput = tuple[list[Prediction], dict[str, Any], dict[str, Any], list[dict[str, Any]]]
