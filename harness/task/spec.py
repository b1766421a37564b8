"""What a task declares: its data, its kind (what the model must do), its prompt, its presets.

Task plugins build a `TaskSpec`; its kind (harness/kinds/) says how such a task runs (requests,
heads, metrics, headline), and the engine asks the kind, so a plugin only says what differs.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from harness.kinds.base import KindBase

if TYPE_CHECKING:  # pandas is heavy; `bench --help` and `bench list` must not import it
    import pandas as pd


@dataclass(frozen=True)
class HubData:
    """Where a dataset lives: a Hugging Face id, and the folder name under a local data dir.

    Local layout: `<data_dir>/<local>/<split>.parquet` (also .jsonl or .csv), HF column names.
    A missing train split is carved from the eval split with a seed; a missing validation
    split is carved from train. The carve is reported next to every table.
    """

    hub_id: str
    local: str
    train: str = "train"
    eval: str = "test"
    validation: str | None = None
    config: str | None = None
    # Rows sharing this column's value (e.g. SQuAD's article title) never straddle carved splits,
    # so a context seen in training never reappears in eval.
    group: str | None = None
    # Eval items sharing this column's value are not independent (questions on one article): their
    # CIs and paired tests use cluster-robust errors over its values. None: the group column.
    cluster: str | None = None

    @property
    def cluster_column(self) -> str | None:
        """The column whose values cluster the eval items, if the task declares one."""
        return self.cluster or self.group


# What a task asks of a model: one of the kinds in harness/kinds/ (Classify, Generate, ...).
Kind = KindBase


@dataclass(frozen=True)
class TaskSpec:
    data: HubData
    kind: Kind
    prompt: str  # str.format template over the kind's fields ("" for raw-text tasks)
    # Optional row transform applied to every raw split before validation (e.g. GoEmotions
    # keeps single-label rows of the chosen emotions and renumbers them).
    prepare: Callable[["pd.DataFrame"], "pd.DataFrame"] | None = None
    # Per-preset overrides of the engine's defaults, e.g. {"paper": {"epochs": 15}}.
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Extra words that identify this task variant in run ids (e.g. goemotions labels=4).
    variant: str = ""
    # A prompt builder for templates `str.format` cannot express (e.g. Alpaca's optional input).
    formatter: Callable[[tuple[str, ...]], str] | None = None
    # The LLM judge's single-answer template for this task ({prompt}, {reference}, {response});
    # None: the default 0-100 grading against the reference.
    judge_template: str | None = None
    # Both filled by the registry: the name the task is registered under, and the first line of
    # the task module's docstring card.
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.formatter is None:
            check_template(self.prompt, self.kind.fields)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name

    def render(self, texts: Sequence[str]) -> str:
        if self.formatter is not None:
            return self.formatter(tuple(texts))
        return self.prompt.format(**dict(zip(self.kind.fields, texts)))


def check_template(prompt: str, fields: Sequence[str]) -> None:
    """A prompt may name only the kind's fields: found when the task is built, not as a KeyError
    after a model has loaded."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None]
    except ValueError as exc:
        raise ValueError(f"prompt is not a str.format template ({exc}); write a literal brace as {{{{ or }}}}") from None
    for name in names:
        base = re.split(r"[.\[]", name)[0]  # {text.upper} and {text[0]} use the field `text`
        if base not in fields:
            raise ValueError(f"prompt names {{{name}}}, which is not a field of the task's kind; its fields are "
                             f"{', '.join(fields) or 'none'} (a column the prompt needs goes in the kind's fields)")
