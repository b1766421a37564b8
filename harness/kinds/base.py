"""The kind contract: everything the engine needs to know about what a task asks of a model.

A task says *what differs* (its data, prompt, labels); its kind says *how such a task runs*:
which columns an example needs, the requests it sends to a backend, the training item it
learns from, the head it trains, how predictions become per-example values and metrics, and
which metric leads. The engine (run/, train/, report/, commands/) asks the kind and never
branches on its type; a new kind is one new module in this package.

Kinds are frozen dataclasses built by task plugins (`Classify(fields=..., labels=...)`); the
methods below are their behaviour. `KindBase` holds the defaults most kinds share.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.errors import BenchError

if TYPE_CHECKING:  # heavy or engine-side types, for annotations only
    import numpy as np
    import pandas as pd

    from harness.backends.base import Backend
    from harness.backends.models import ModelRef
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec
    from harness.types import Example, Prediction, TrainItem


class KindBase:
    """Defaults shared by most kinds; each kind overrides what differs."""

    # The metric shown first and compared before/after, and whether lower is better.
    headline: ClassVar[str]
    lower_is_better: ClassVar[bool] = False
    # Metrics recorded during training; the first is the default early-stopping criterion.
    # ("loss" = held-out loss of the training items, lower is better.)
    validation_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    # The new head `--objective head` trains and `--baseline head` evaluates untrained:
    # "classifier", "span", or None when the kind has no head (text tasks).
    head: ClassVar[str | None] = None
    # Each prediction is right or wrong (a label): McNemar/power on accuracy, per-class tables.
    discrete: ClassVar[bool] = False
    # Its stored outputs are generated answers a judge can grade.
    judgeable: ClassVar[bool] = False
    # Its metrics include METEOR, which needs WordNet: a missing WordNet fails at planning.
    uses_meteor: ClassVar[bool] = False

    # The text columns the prompt template formats, in order (Example.texts): a dataclass field of
    # the kind, or a property. (Annotated here, not a property: a property on the base would stop a
    # frozen dataclass field of that name from being set.)
    fields: tuple[str, ...]

    def columns(self) -> tuple[str, ...]:
        """Every column an example needs: the fields and the gold (label, target, answers...)."""
        return self.fields

    # --- data --------------------------------------------------------------------------------
    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        """Rows (already checked: columns present, texts are text, ids unique) -> Examples with
        their gold. A bad gold cell raises BenchError naming `where`, the column and the row."""
        raise NotImplementedError

    def sample_train(self, pool: Sequence["Example"], n: int | None, rng: "np.random.Generator"
                     ) -> tuple[list["Example"], str]:
        """The training sample and how it was drawn (shown in the data notes)."""
        # lazy: task.data imports this module at its top (a cycle); and keeps numpy, pandas out
        from harness.task.data import random_sample

        return random_sample(pool, n, rng), "random sample"

    # --- planning ----------------------------------------------------------------------------
    @staticmethod
    def default_objective(can_prompt: bool, method_name: str) -> str:
        """`--objective auto`: train the LM on the targets (prompt masked)."""
        return "lm"

    @staticmethod
    def default_baseline(can_prompt: bool) -> str:
        """`--baseline auto`: prompt a model that has an LM head, else the untrained head."""
        return "prompt" if can_prompt else "head"

    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        """Options that contradict this kind (or do not fit the model), as one BenchError, before
        any work. `baselines` are the resolved baseline kinds the run evaluates."""

    def generated_tokens(self, config: "RunConfig") -> int | None:
        """How many tokens a prompted evaluation generates per example (the decoder's positions a
        seq2seq model needs), or None when the kind's generation is not prompted by the task."""
        return None

    def shots(self, config: "RunConfig", objective: str) -> int:
        """The demonstrations each prompt shows (recorded with the stage)."""
        return 0

    # --- evaluation --------------------------------------------------------------------------
    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        """Requests for the examples -> one backend call per request type -> Predictions (in the
        examples' order). `objective` is "lm" (prompted/LM model) or "head" (a trained or untrained
        head); `demos` is the pool few-shot demonstrations are drawn from."""
        raise NotImplementedError

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        """A stage's metrics and its predictions with their per-example values (what paired
        before/after statistics resample); `examples[i]` is the example `predictions[i]` answers
        (scoring_helpers.score_stage matches them by id). `bench rescore` calls it on stored outputs."""
        raise NotImplementedError

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        """The metrics a fine-tuned stage records with a value (sweep and compare axes)."""
        raise NotImplementedError

    def shown(self, examples: Sequence["Example"]) -> tuple[dict[str, str], dict[str, str]]:
        """Example id -> what the model was shown, and id -> what it should have answered, for
        the sample tables of a report."""
        return ({e.id: " / ".join(t for t in e.texts if t.strip()) for e in examples},
                {e.id: " | ".join(e.references) or "(no answer)" for e in examples})

    # --- training ----------------------------------------------------------------------------
    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence["Example"]) -> list["TrainItem"]:
        """What fine-tuning learns from, for `config.objective` ("lm": targets after the prompt,
        prompt masked; "head": the kind's head)."""
        raise NotImplementedError

    def validation_values(self, spec: "TaskSpec", predictions: Sequence["Prediction"]) -> dict[str, float]:
        """The validation metrics of predictions on the validation split, for kinds whose
        validation_metrics are not ("loss",). Loss-validated kinds never get this call."""
        raise NotImplementedError

    def answer_names(self) -> tuple[str, ...]:
        """Names of a discrete kind's answers by index, for the sample tables of a report: the
        labels, or the positions of per-example choices."""
        return ()

    def prompt_record(self, spec: "TaskSpec", tokenizer: Any, config: "RunConfig", seq2seq: bool) -> dict[str, Any]:
        """What a checkpoint records about how the model was prompted, beyond the template
        (e.g. the label verbalizers), so it can be used without bench."""
        return {}


def refuse_generation_options(spec: "TaskSpec", config: "RunConfig", what: str, fix: str = "") -> None:
    """--max-new-tokens and --chat-template on a kind that generates nothing from the task's prompt:
    they would change the run id (a second full run) and nothing else."""
    if config.max_new_tokens is not None or config.chat_template != "auto":
        option = "--max-new-tokens" if config.max_new_tokens is not None else "--chat-template"
        raise BenchError(f"{option} applies to prompted generation; {spec.name} {what}, so it would change nothing "
                         f"but the run id: drop it{fix}")


def refuse_head_options(spec: "TaskSpec", config: "RunConfig", baselines: Sequence[str], kind_name: str) -> None:
    """A text task has no classification head and no few-shot prompt."""
    if "head" in baselines or config.objective != "lm":
        raise BenchError(f"{spec.name} is a text task ({kind_name}): it has no classification head; use --baseline "
                         "prompt and --objective lm (the defaults)")
    if config.shots:
        raise BenchError(f"--shots applies to classification prompts; {spec.name} is a text task")
