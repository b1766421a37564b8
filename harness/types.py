"""The values that flow between stages. Frozen: a stage never edits what it was given."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One eval or train item: its source id, the task's text fields, the gold label index."""

    id: str
    texts: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class Splits:
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    eval: tuple[Example, ...]
    # Human-readable provenance ("train carved from test, seed 0"), shown under every table.
    notes: tuple[str, ...] = ()
    # sha256 of the source files read, so a record says exactly which data produced it.
    source_hashes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    """A scored example. `label` is None when the example could not be scored (a failure)."""

    example_id: str
    gold: int
    label: int | None
    scores: tuple[float, ...]  # per-label log-likelihoods (prompt) or probabilities (head)
