"""What a task declares: its data, its kind (what the model must do), its prompt, its presets.

Task plugins build a `TaskSpec`; the engine derives requests, heads and metrics from the kind,
so a plugin only says what differs between tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

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


@dataclass(frozen=True)
class Classify:
    """Pick one label. `fields` are the text columns (one, or a pair such as premise/hypothesis).

    `verbalizers` are the words the zero-shot prompt scores; each is scored as a continuation
    of the prompt, so it carries its own leading space.
    """

    fields: tuple[str, ...]
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...] = ()
    label_column: str = "label"

    def __post_init__(self) -> None:
        if not self.verbalizers:
            object.__setattr__(self, "verbalizers", tuple(" " + name for name in self.labels))
        if len(self.verbalizers) != len(self.labels):
            raise ValueError("one verbalizer per label")
        if len(set(self.verbalizers)) != len(self.verbalizers):
            raise ValueError("verbalizers must be distinct")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    data: HubData
    kind: Classify
    prompt: str  # str.format template over the kind's fields
    # Optional row transform applied to every raw split before validation (e.g. GoEmotions
    # keeps single-label rows of the chosen emotions and renumbers them).
    prepare: Callable[["pd.DataFrame"], "pd.DataFrame"] | None = None
    # Per-preset overrides of the engine's defaults, e.g. {"paper": {"epochs": 15}}.
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Extra words that identify this task variant in run ids (e.g. goemotions labels=4).
    variant: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name

    def render(self, texts: Sequence[str]) -> str:
        return self.prompt.format(**dict(zip(self.kind.fields, texts)))
