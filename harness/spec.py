"""What a task declares: its data, its kind (what the model must do), its prompt, its presets.

Task plugins build a `TaskSpec`; the engine derives requests, heads and metrics from the kind,
so a plugin only says what differs between tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

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
class Generate:
    """Write text from a prompt: a summary, an answer, an instruction's response.

    Zero-shot = greedy generation from the prompt; fine-tuning = supervised on `target` with the
    prompt tokens masked out of the loss (causal) or as the decoder target (seq2seq). `metrics`
    picks the scorer: "text" (ROUGE-1/2/L/Lsum, BLEU, METEOR) or "squad_v2" (EM/F1 with
    unanswerable questions, plus the text metrics on the answers).
    """

    fields: tuple[str, ...]
    target: str  # column with the reference text (for "squad_v2": the answers struct)
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # generation is cut at the first of these strings
    metrics: str = "text"
    no_answer: str = "unanswerable"  # what the model is taught to say when there is no answer (squad_v2)

    @property
    def headline(self) -> str:
        return "f1" if self.metrics == "squad_v2" else "rougeL"


@dataclass(frozen=True)
class LanguageModel:
    """Model raw text: token-weighted perplexity over held-out documents (rolling windows with a
    stride), and continuation quality (BLEU, ROUGE) from the first `prompt_tokens` of each."""

    field: str = "text"
    stride: int = 256  # tokens scored per window step; each window sees up to max_length of context
    prompt_tokens: int = 32
    continuation_tokens: int = 32

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    headline = "nll"


@dataclass(frozen=True)
class ExtractiveQA:
    """Point at the answer span in the context, or at nothing when the question is unanswerable
    (SQuAD v2). Long contexts are split into windows of max_length tokens overlapping by
    `doc_stride`; the answer is the best span over all windows unless the null score wins."""

    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    doc_stride: int = 128
    max_answer_tokens: int = 30

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.question, self.context)

    headline = "f1"


Kind = Union[Classify, Generate, LanguageModel, ExtractiveQA]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
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

    @property
    def key(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name

    @property
    def is_classification(self) -> bool:
        return isinstance(self.kind, Classify)

    def render(self, texts: Sequence[str]) -> str:
        if self.formatter is not None:
            return self.formatter(tuple(texts))
        return self.prompt.format(**dict(zip(self.kind.fields, texts)))
