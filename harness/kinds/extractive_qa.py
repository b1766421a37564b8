"""ExtractiveQA: point at the answer span in the context, or at nothing (SQuAD v2), with a span head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.backends.base import Backend, SpanQuery
from harness.backends.qa_span import span_train_items
from harness.errors import BenchError
from harness.kinds.base import KindBase, refuse_generation_options
from harness.kinds.scoring_helpers import squad_scores, text_metric_names
from harness.types import Example, Prediction, TrainItem

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.models import ModelRef
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec


@dataclass(frozen=True)
class ExtractiveQA(KindBase):
    """Point at the answer span in the context, or at nothing when the question is unanswerable
    (SQuAD v2). Long contexts are split into windows of max_length tokens overlapping by
    `doc_stride`; the answer is the best span over all windows unless the null score wins."""

    question: str = "question"
    context: str = "context"
    answers: str = "answers"
    doc_stride: int = 128
    max_answer_tokens: int = 30

    headline: ClassVar[str] = "f1"
    head: ClassVar[str | None] = "span"
    uses_meteor: ClassVar[bool] = True

    @property  # type: ignore[override]
    def fields(self) -> tuple[str, ...]:
        return (self.question, self.context)

    def columns(self) -> tuple[str, ...]:
        return (*self.fields, self.answers)

    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        return "head"  # a span head, for every model

    @staticmethod
    def default_baseline(can_prompt: bool) -> str:
        return "head"  # the untrained span head; `--mode generate` (a GenerateSquad kind) prompts instead

    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        # lazy: keeps numpy, pandas out of `bench --help`
        from harness.task.data import squad_examples

        return squad_examples(frame, ids, texts, where, self.answers)

    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        refuse_generation_options(spec, config, "--mode span points at a span in the context",
                                  ", or use --mode generate")
        if "prompt" in baselines or config.objective != "head":
            raise BenchError("squad_v2 --mode span trains and evaluates a span head: use --baseline head "
                             "--objective head, or --mode generate for prompted answers")
        stride = self.doc_stride
        if config.max_length <= stride:  # found by the baseline, after the model had loaded
            raise BenchError(f"--max-length {config.max_length}: {spec.name}'s context windows overlap by its "
                             f"doc_stride of {stride} tokens, so they must be longer; use --max-length "
                             f"{2 * stride} or more, or a smaller ExtractiveQA(doc_stride=...) in the task")

    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        spans = backend.extract_spans([SpanQuery(e.texts[0], e.texts[1], config.max_length, self.doc_stride,
                                                 self.max_answer_tokens, id=e.id) for e in examples])
        return [Prediction(e.id, -1, None, (round(span.null_score, 6),), output=span.text)
                for e, span in zip(examples, spans)]

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        return squad_scores(examples, predictions, seed, generative=False)

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        return text_metric_names(self.headline)

    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence["Example"]) -> list["TrainItem"]:
        """Answer spans per context window (a window holding no whole answer points at no answer)."""
        return span_train_items(tokenizer, examples, config.max_length, self.doc_stride)
