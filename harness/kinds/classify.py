"""Classify: pick one label. Zero/few-shot = the label verbalizers scored as continuations of the
prompt; a head model = class probabilities; fine-tuning = the verbalizer after the prompt (lm) or
a new classification head."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.backends.base import Backend, HeadScores, Loglikelihood
from harness.backends.hf import encode_for_head
from harness.backends.models import ModelRef, load_tokenizer
from harness.errors import BenchError
from harness.kinds.base import KindBase, refuse_generation_options
from harness.kinds.scoring_helpers import MIN_FOR_WARNINGS
from harness.types import Example, Prediction, TrainItem

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from harness.options import RunConfig
    from harness.task.spec import TaskSpec


@dataclass(frozen=True)
class Classify(KindBase):
    """Pick one label. `fields` are the text columns (one, or a pair such as premise/hypothesis).

    `verbalizers` are the words the zero-shot prompt scores; each is scored as a continuation
    of the prompt, so it carries its own leading space.
    """

    fields: tuple[str, ...]  # type: ignore[assignment]
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...] = ()
    label_column: str = "label"

    headline: ClassVar[str] = "accuracy"
    validation_metrics: ClassVar[tuple[str, ...]] = ("f1_macro", "accuracy")
    head: ClassVar[str | None] = "classifier"
    discrete: ClassVar[bool] = True

    def answer_names(self) -> tuple[str, ...]:
        return self.labels

    def __post_init__(self) -> None:
        if not self.verbalizers:
            object.__setattr__(self, "verbalizers", tuple(" " + name for name in self.labels))
        if len(self.verbalizers) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but {len(self.verbalizers)} verbalizers: give one per label")
        repeated = [v for i, v in enumerate(self.verbalizers) if v in self.verbalizers[:i]]
        if repeated:
            raise ValueError(f"verbalizer {repeated[0]!r} is given for two labels: each label needs its own word")

    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        # A model with an LM head keeps it and learns the verbalizers, so before and after are
        # scored the same way; encoders, and --method head, train a new classification head.
        return "lm" if can_prompt and method_name != "head" else "head"

    def columns(self) -> tuple[str, ...]:
        return (*self.fields, self.label_column)

    # --- data --------------------------------------------------------------------------------
    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        # lazy: keeps numpy, pandas out of `bench --help`
        from harness.task.data import checked_labels

        labels = checked_labels(frame, self, where)
        return [Example(id=ids[i], texts=texts[i], label=labels[i]) for i in range(len(frame))]

    def sample_train(self, pool: Sequence["Example"], n: int | None, rng: "np.random.Generator"
                     ) -> tuple[list["Example"], str]:
        # lazy: keeps numpy, pandas out of `bench --help`
        from harness.task.data import balanced_sample

        return balanced_sample(pool, n, len(self.labels), rng), "class-balanced sample"

    # --- planning ----------------------------------------------------------------------------
    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        refuse_generation_options(spec, config, "scores its label verbalizers and generates nothing")
        if config.shots and "prompt" not in baselines and config.objective != "lm":
            raise BenchError(f"--shots {config.shots}: nothing would show {ref.name} the demonstrations (no prompt "
                             "baseline, head objective); drop --shots, or use --baseline prompt with a causal model")
        if "prompt" in baselines or config.objective == "lm":
            self._check_verbalizers(spec, ref)

    def _check_verbalizers(self, spec: "TaskSpec", ref: "ModelRef") -> None:
        """A label is scored by the summed log-probabilities of its verbalizer's tokens, so a verbalizer
        whose tokens start with all of another's scores at most as high (each extra token adds a log-
        probability <= 0): its label would never be predicted, before or after fine-tuning."""
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import verbalizer_ids

        words, labels = self.verbalizers, self.labels
        ids = verbalizer_ids(spec, load_tokenizer(ref))
        for i, j in ((i, j) for i in range(len(ids)) for j in range(len(ids)) if i != j):
            if ids[j][:len(ids[i])] == ids[i]:
                same = "the same tokens as" if ids[i] == ids[j] else "all the tokens of"
                raise BenchError(f"task {spec.name}: with {ref.name}'s tokenizer the verbalizer {words[j]!r} has "
                                 f"{same} {words[i]!r} ({ids[j]} vs {ids[i]}), so label {labels[j]!r} can never "
                                 f"outscore {labels[i]!r}; give the labels verbalizers that differ in their tokens")

    def shots(self, config: "RunConfig", objective: str) -> int:
        return config.shots if objective == "lm" else 0

    # --- evaluation --------------------------------------------------------------------------
    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        if objective == "head":
            rows = backend.head_scores([HeadScores(tuple(e.texts), config.max_length) for e in examples])
            return [_argmax_prediction(example, row) for example, row in zip(examples, rows)]
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import build_contexts, choose_shots, verbalizer_ids

        shown = choose_shots(demos, config.shots, len(self.labels), config.seed)
        contexts = build_contexts(spec, backend.tokenizer, examples, shown, config.max_length,
                                  strip_eos=not backend.seq2seq)
        choices = tuple(tuple(ids) for ids in verbalizer_ids(spec, backend.tokenizer))
        scores = backend.loglikelihood([Loglikelihood(tuple(context), choices) for context in contexts])
        return [_argmax_prediction(example, row) for example, row in zip(examples, scores)]

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        # lazy: keeps numpy out of `bench --help`
        from harness.metrics.classification import classification_report

        report = classification_report([p.gold for p in predictions], [p.label for p in predictions], self.labels,
                                       seed=seed)
        return {**report, **self._class_context(predictions)}, list(predictions)

    def _class_context(self, predictions: Sequence["Prediction"]) -> dict[str, Any]:
        """What an accuracy is worth: the score of always answering the most frequent eval class, and
        a warning when every answer is one class (the score is then that class's share)."""
        golds = [p.gold for p in predictions]
        top = max(range(len(self.labels)), key=golds.count)
        context: dict[str, Any] = {"majority": {"label": self.labels[top], "accuracy": golds.count(top) / len(golds)}}
        answered = {p.label for p in predictions if p.label is not None}
        if len(predictions) >= MIN_FOR_WARNINGS and len(answered) == 1:
            (label,) = answered
            context["warnings"] = [f"every answer is {self.labels[label]!r}: its accuracy is that class's share of "
                                   "the eval set"]
        return context

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        # lazy: keeps numpy out of `bench --help`
        from harness.metrics.classification import classification_report

        report = classification_report([0], [0], self.labels, resamples=0)
        return [name for name, value in report.items() if isinstance(value, dict) and "value" in value]

    # --- training ----------------------------------------------------------------------------
    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence["Example"]) -> list["TrainItem"]:
        """Head objective: the text(s) and the class. LM objective: prompt + verbalizer, loss on the
        verbalizer tokens only (the prompt is masked with -100)."""
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import build_contexts, verbalizer_ids

        if config.objective == "head":
            encoded, segments = encode_for_head(tokenizer, examples, config.max_length)
            return [TrainItem(ids, label=e.label, token_type_ids=segments[i] if segments else None)
                    for i, (ids, e) in enumerate(zip(encoded, examples))]
        contexts = build_contexts(spec, tokenizer, examples, [], config.max_length, strip_eos=not seq2seq)
        answers = verbalizer_ids(spec, tokenizer)
        if seq2seq:
            return [TrainItem(ctx, lm_labels=answers[e.label]) for ctx, e in zip(contexts, examples)]
        return [TrainItem(ctx + answers[e.label], lm_labels=[-100] * len(ctx) + answers[e.label])
                for ctx, e in zip(contexts, examples)]

    def validation_values(self, spec: "TaskSpec", predictions: Sequence["Prediction"]) -> dict[str, float]:
        # lazy: keeps numpy out of `bench --help`
        from harness.metrics.classification import classification_report

        if all(p.label is None for p in predictions):  # every score inf/nan: a broken model, not a bad one
            return {"f1_macro": math.nan, "accuracy": math.nan}
        report = classification_report([p.gold for p in predictions], [p.label for p in predictions],
                                       self.labels, resamples=0)
        return {"f1_macro": report["f1_macro"]["value"], "accuracy": report["accuracy"]["value"]}

    def prompt_record(self, spec: "TaskSpec", tokenizer: Any, config: "RunConfig", seq2seq: bool) -> dict[str, Any]:
        return {"verbalizers": list(self.verbalizers)}


def _argmax_prediction(example: "Example", scores: Sequence[float]) -> "Prediction":
    """A non-finite score means the example could not be scored: a failure, never a guess."""
    finite = bool(scores) and all(math.isfinite(s) for s in scores)
    label = max(range(len(scores)), key=lambda k: scores[k]) if finite else None
    return Prediction(example_id=example.id, gold=example.label, label=label,
                      scores=tuple(round(float(s), 6) if math.isfinite(s) else float("nan") for s in scores))
