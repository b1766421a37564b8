"""What a task declares: its data, its kind (what the model must do), its prompt, its presets.

Task plugins build a `TaskSpec`; the kind carries the facts the engine needs about it (headline
metric and its direction, validation metrics, default objective and baseline), and the engine's
stages dispatch on it for requests, heads and metrics, so a plugin only says what differs.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence, Union

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


class _KindDefaults:
    """What a kind tells the engine, with the defaults most kinds share; each kind overrides what
    differs. The engine asks the kind instead of branching on its type."""

    headline: ClassVar[str]  # the metric shown first and compared before/after
    lower_is_better: ClassVar[bool] = False
    validation_metrics: ClassVar[tuple[str, ...]] = ("loss",)  # during training; the first: default early stop
    squad_scored: ClassVar[bool] = False  # references are SQuAD answer structs (EM/F1, unanswerable)

    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        """`--objective auto`: train the LM on the targets (prompt masked)."""
        return "lm"

    @staticmethod
    def default_baseline(can_prompt: bool) -> str:
        """`--baseline auto`: prompt a model that has an LM head, else the untrained head."""
        return "prompt" if can_prompt else "head"


@dataclass(frozen=True)
class Classify(_KindDefaults):
    """Pick one label. `fields` are the text columns (one, or a pair such as premise/hypothesis).

    `verbalizers` are the words the zero-shot prompt scores; each is scored as a continuation
    of the prompt, so it carries its own leading space.
    """

    fields: tuple[str, ...]
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...] = ()
    label_column: str = "label"

    headline: ClassVar[str] = "accuracy"
    validation_metrics: ClassVar[tuple[str, ...]] = ("f1_macro", "accuracy")

    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        # A model with an LM head keeps it and learns the verbalizers, so before and after are
        # scored the same way; encoders, and --method head, train a new classification head.
        return "lm" if can_prompt and method_name != "head" else "head"

    def __post_init__(self) -> None:
        if not self.verbalizers:
            object.__setattr__(self, "verbalizers", tuple(" " + name for name in self.labels))
        if len(self.verbalizers) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but {len(self.verbalizers)} verbalizers: give one per label")
        repeated = [v for i, v in enumerate(self.verbalizers) if v in self.verbalizers[:i]]
        if repeated:
            raise ValueError(f"verbalizer {repeated[0]!r} is given for two labels: each label needs its own word")


@dataclass(frozen=True)
class Generate(_KindDefaults):
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

    @property  # type: ignore[override]
    def headline(self) -> str:
        return "f1" if self.squad_scored else "rougeL"

    @property  # type: ignore[override]
    def squad_scored(self) -> bool:
        return self.metrics == "squad_v2"


@dataclass(frozen=True)
class LanguageModel(_KindDefaults):
    """Model raw text: token-weighted perplexity over held-out documents (rolling windows with a
    stride), and continuation quality (BLEU, ROUGE): from the first `prompt_words` words of each
    document, continue for the next `continuation_words` (cut by words, so every tokenizer gets the
    same pair)."""

    field: str = "text"
    stride: int = 256  # tokens scored per window step; each window sees up to max_length of context
    prompt_words: int = 32
    continuation_words: int = 32

    headline: ClassVar[str] = "perplexity"
    lower_is_better: ClassVar[bool] = True

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def continuation_split(self, text: str) -> tuple[str, str]:
        """(prompt, reference continuation) of one document."""
        words = text.split()
        return (" ".join(words[: self.prompt_words]),
                " ".join(words[self.prompt_words: self.prompt_words + self.continuation_words]))


@dataclass(frozen=True)
class ExtractiveQA(_KindDefaults):
    """Point at the answer span in the context, or at nothing when the question is unanswerable
    (SQuAD v2). Long contexts are split into windows of max_length tokens overlapping by
    `doc_stride`; the answer is the best span over all windows unless the null score wins."""

    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    doc_stride: int = 128
    max_answer_tokens: int = 30

    headline: ClassVar[str] = "f1"
    squad_scored: ClassVar[bool] = True

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.question, self.context)

    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        return "head"  # a span head, for every model

    @staticmethod
    def default_baseline(can_prompt: bool) -> str:
        return "head"  # the untrained span head; `--mode generate` (a Generate kind) prompts instead


Kind = Union[Classify, Generate, LanguageModel, ExtractiveQA]


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

    @property
    def is_classification(self) -> bool:
        return isinstance(self.kind, Classify)

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
