"""Multiple choice over per-example choices (lm-eval style: ARC, HellaSwag, PIQA, COPA).

Each question brings its own list of choice texts; the model's answer is the choice it finds
most likely after the prompt, log P(choice | prompt) summed over the choice's tokens. One
`Loglikelihood` request per question carries all its choices (lighteval's shape), so a backend
can share the prompt's computation between them. Metrics are lm-eval's: `accuracy` (its acc:
argmax of the summed log-likelihoods) and `acc_norm` (argmax of log-likelihood divided by the
choice's length in characters, the delimiter not counted), each with a Wilson CI. Fine-tuning
teaches the right choice after the prompt (prompt masked), so before and after score alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.backends.base import Backend, Loglikelihood, Tokens
from harness.errors import BenchError
from harness.kinds.base import KindBase
from harness.types import Example, Prediction, TrainItem

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.models import ModelRef
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec

MIN_FOR_WARNINGS = 10  # below this many questions, one position for every answer is not remarkable


@dataclass(frozen=True)
class MultipleChoice(KindBase):
    """`fields` are the text columns the prompt formats; `choices` the column holding each row's
    list of choice texts (two or more); `label_column` the index of the right one. A choice is
    scored as `choice_prefix + text` right after the prompt (a leading space by default)."""

    # A default shadows KindBase's `fields` property (a dataclass field cannot be set through a
    # property); __post_init__ still requires it.
    fields: tuple[str, ...] = ()  # type: ignore[assignment]
    choices: str = "choices"
    label_column: str = "label"
    choice_prefix: str = " "

    headline: ClassVar[str] = "accuracy"
    discrete: ClassVar[bool] = True
    validation_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)

    def answer_names(self) -> tuple[str, ...]:
        """Choices are per question: a report names them by position (A, B, C ...)."""
        return tuple(chr(ord("A") + i) for i in range(26))

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("MultipleChoice needs fields: the text columns its prompt formats, e.g. ('question',)")

    def columns(self) -> tuple[str, ...]:
        return (*self.fields, self.choices, self.label_column)

    # --- data --------------------------------------------------------------------------------
    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list[Example]:
        rows = [int(row) for row in frame.index]
        options = [self._choice_texts(value, where, row) for value, row in zip(frame[self.choices].tolist(), rows)]
        labels = [self._label(value, len(texts_of), where, row)
                  for value, texts_of, row in zip(frame[self.label_column].tolist(), options, rows)]
        return [Example(id=str(i), texts=tuple(t), label=label, references=choices)
                for i, t, label, choices in zip(ids, texts, labels, options)]

    def _choice_texts(self, value: Any, where: str, row: int) -> tuple[str, ...]:
        value = value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value
        fix = ("a CSV cell cannot hold a list: use .jsonl or .parquet" if isinstance(value, str)
               else "fix or drop that row")
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise BenchError(f"{where}: column {self.choices!r} row {row} is {_shown(value)}, not a list of 2 or more "
                             f"choice texts; {fix}")
        blank = next((k for k, text in enumerate(value) if not isinstance(text, str) or not text.strip()), None)
        if blank is not None:
            raise BenchError(f"{where}: column {self.choices!r} row {row} has choice {blank} {_shown(value[blank])}, "
                             "not a non-blank text; fix or drop that row")
        return tuple(value)

    def _label(self, value: Any, count: int, where: str, row: int) -> int:
        number = value.item() if hasattr(value, "item") else value
        whole = isinstance(number, (int, float)) and not isinstance(number, bool) and float(number).is_integer()
        if not whole or not 0 <= int(number) < count:
            raise BenchError(f"{where}: column {self.label_column!r} row {row} is {_shown(number)}, not the index of "
                             f"one of its {count} choices (0-{count - 1}); fix or drop that row")
        return int(number)

    # --- planning ----------------------------------------------------------------------------
    @staticmethod
    def default_baseline(can_prompt: bool) -> str:
        return "prompt"  # there is no head to fall back on; `check` names the fix for encoders

    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        task = f"task {spec.name} (multiple choice)"
        if not ref.can_prompt:
            raise BenchError(f"{task} scores each choice with the model's LM head, and {ref.name} has none (an "
                             "encoder); use a causal or seq2seq model")
        if "head" in baselines:
            raise BenchError(f"--baseline head: {task} has no classification head (every question has its own "
                             "choices); use --baseline prompt")
        if config.objective == "head":
            raise BenchError(f"--objective head: {task} learns the right choice with the LM head; use --objective lm")
        if config.method_name == "head":
            raise BenchError(f"--method head trains only a new classification head, which {task} does not use; "
                             "use --method full, lora, qlora or freeze:N")
        if config.shots:
            raise BenchError(f"--shots {config.shots}: {task} is scored zero-shot; drop --shots")

    # --- evaluation --------------------------------------------------------------------------
    def requests(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, examples: Sequence[Example],
                 max_length: int) -> list[Loglikelihood]:
        """One request per question: its prompt and every choice. A choice keeps at most half the
        length budget; the prompt keeps its end (the question and the answer cue) in what is left."""
        prompts = tokenizer([spec.render(e.texts) for e in examples])["input_ids"] if examples else []
        eos = None if seq2seq else tokenizer.eos_token_id  # a few causal tokenizers append EOS: drop it
        written = [self.choice_prefix + text for e in examples for text in e.references]
        flat = iter(tokenizer(written, add_special_tokens=False)["input_ids"] if written else [])
        requests = []
        for example, prompt in zip(examples, prompts):
            choices = tuple(tuple(next(flat)[: max_length // 2]) for _ in example.references)
            if eos is not None and len(prompt) > 1 and prompt[-1] == eos:
                prompt = prompt[:-1]
            budget = max_length if seq2seq else max_length - max(len(c) for c in choices)
            requests.append(Loglikelihood(context=tuple(prompt[-budget:]), continuations=choices))
        return requests

    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence[Example],
                demos: Sequence[Example], config: "RunConfig", objective: str) -> list[Prediction]:
        if objective != "lm":
            raise BenchError(f"task {spec.name} (multiple choice) is scored with the LM head only; use --objective lm")
        requests = self.requests(spec, backend.tokenizer, backend.seq2seq, examples, config.max_length)
        scores = backend.loglikelihood(requests)
        return [_argmax_prediction(example, row) for example, row in zip(examples, scores)]

    def score(self, spec: "TaskSpec", examples: Sequence[Example], predictions: Sequence[Prediction],
              seed: int) -> tuple[dict[str, Any], list[Prediction]]:
        # lazy: keeps numpy out of `bench --help`
        from harness.compare.stats import wilson_interval
        from harness.metrics.classification import classification_report

        by_id = {e.id: e for e in examples}
        matched = [by_id[p.example_id] for p in predictions]
        # Positions some question's answer or prediction took: a position no question has right and
        # no prediction took (a 4th choice where most questions have 3) would add a zero F1.
        widest = 1 + max(p.label if p.label is not None and p.label > p.gold else p.gold for p in predictions)
        report = classification_report([p.gold for p in predictions], [p.label for p in predictions],
                                       _position_names(widest), seed=seed)
        right_norm = [_normalised_choice(p, e) == p.gold for p, e in zip(predictions, matched)]
        norm = sum(right_norm) / len(right_norm)
        report["acc_norm"] = {"value": norm, "ci": list(wilson_interval(sum(right_norm), len(right_norm)))}
        report["chance_accuracy"] = sum(1 / len(e.references) for e in matched) / len(matched)
        report.update(_position_context(predictions, widest))
        scored = [replace(p, values={"correct": float(p.label == p.gold), "correct_norm": float(ok)})
                  for p, ok in zip(predictions, right_norm)]
        return report, scored

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        # lazy: keeps numpy out of `bench --help`
        from harness.metrics.classification import classification_report

        report = classification_report([0], [0], _position_names(2), resamples=0)
        return [name for name, value in report.items() if isinstance(value, dict) and "value" in value] + ["acc_norm"]

    def validation_values(self, spec: "TaskSpec", predictions: Sequence[Prediction]) -> dict[str, float]:
        return {"accuracy": sum(p.label == p.gold for p in predictions) / max(1, len(predictions))}

    def shown(self, examples: Sequence[Example]) -> tuple[dict[str, str], dict[str, str]]:
        asked = {e.id: " / ".join(t for t in e.texts if t.strip()) + " | choices: " + " / ".join(e.references)
                 for e in examples}
        return asked, {e.id: e.references[e.label] for e in examples}

    def prompt_record(self, spec: "TaskSpec", tokenizer: Any, config: "RunConfig", seq2seq: bool) -> dict[str, Any]:
        return {"choice_prefix": self.choice_prefix, "scoring": "argmax of log P(choice | prompt), summed over tokens"}

    # --- training ----------------------------------------------------------------------------
    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence[Example]) -> list[TrainItem]:
        """The prompt, then the right choice: the loss on the choice's tokens only (causal: the
        prompt masked with -100; seq2seq: the choice is the decoder target)."""
        if config.objective != "lm":
            raise BenchError(f"--objective {config.objective}: task {spec.name} (multiple choice) trains the LM "
                             "head; use --objective lm")
        items = []
        for example, request in zip(examples, self.requests(spec, tokenizer, seq2seq, examples, config.max_length)):
            prompt, answer = list(request.context), list(request.continuations[example.label])
            items.append(TrainItem(prompt, lm_labels=answer) if seq2seq
                         else TrainItem(prompt + answer, lm_labels=[-100] * len(prompt) + answer))
        return items


def _argmax_prediction(example: Example, scores: Sequence[float]) -> Prediction:
    """The most likely choice (the first of equals, as numpy's argmax); a non-finite score means
    the question could not be scored: a failure, never a guess."""
    finite = len(scores) == len(example.references) and all(math.isfinite(s) for s in scores)
    label = max(range(len(scores)), key=lambda k: scores[k]) if finite else None
    return Prediction(example_id=example.id, gold=example.label, label=label,
                      scores=tuple(round(float(s), 6) if math.isfinite(s) else float("nan") for s in scores))


def _normalised_choice(prediction: Prediction, example: Example) -> int | None:
    """lm-eval's acc_norm choice: argmax of log-likelihood / the choice text's character count."""
    if prediction.label is None:
        return None
    per_char = [score / len(text) for score, text in zip(prediction.scores, example.references)]
    return max(range(len(per_char)), key=lambda k: per_char[k])


def _position_names(count: int) -> tuple[str, ...]:
    """Answer positions named as on an exam sheet: A, B, C, ... (precision/recall/F1 are over
    positions, so a model that favours one position scores a low macro-F1)."""
    return tuple(chr(ord("A") + k) if k < 26 else str(k + 1) for k in range(count))


def _position_context(predictions: Sequence[Prediction], widest: int) -> dict[str, Any]:
    """What an accuracy is worth: always answering the most frequent right position, and a
    warning when every answer is one position."""
    names = _position_names(widest)
    golds = [p.gold for p in predictions]
    top = max(range(widest), key=golds.count)
    context: dict[str, Any] = {"majority": {"label": names[top], "accuracy": golds.count(top) / len(golds)}}
    answered = {p.label for p in predictions if p.label is not None}
    if len(predictions) >= MIN_FOR_WARNINGS and len(answered) == 1:
        context["warnings"] = [f"every answer is choice {names[answered.pop()]}: its accuracy is that position's "
                               "share of the eval set"]
    return context


def _shown(value: Any) -> str:
    """A cell as a message shows it: `7`, `'a'`, or `a list ['a']`, cut short."""
    text = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return ("a list " if isinstance(value, (list, tuple)) else "") + text
