"""GenerateSquad: answer a question from a passage in words, scored as SQuAD v2 (EM/F1 with
unanswerable questions, where "unanswerable" and its variants mean no answer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.kinds.generate import Generate
from harness.kinds.scoring_helpers import squad_scores
from harness.types import Example, Prediction

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.base import Backend
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec


@dataclass(frozen=True)
class GenerateSquad(Generate):
    """Generated answers scored by SQuAD v2 EM/F1 (plus the text metrics on the answerable
    questions). `target` is the SQuAD answers struct column; an unanswerable question teaches
    `no_answer`."""

    no_answer: str = "unanswerable"  # what the model is taught to say when there is no answer

    headline: ClassVar[str] = "f1"

    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        # lazy: keeps numpy, pandas out of `bench --help`
        from harness.task.data import squad_examples

        return squad_examples(frame, ids, texts, where, self.target)

    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        outputs = self._generate(spec, backend, examples, config)
        return [Prediction(e.id, -1, None, (), output=text) for e, text in zip(examples, outputs)]

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        return squad_scores(examples, predictions, seed, generative=True)

    def target_text(self, example: "Example") -> str:
        """An unanswerable question teaches the no-answer phrase."""
        return example.references[0] if example.references else self.no_answer
