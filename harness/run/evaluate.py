"""Model + examples -> Predictions, by prompt scoring (zero/few-shot) or a classification head."""
from __future__ import annotations

import math
from typing import Any, Sequence

from harness.backends.hf import classify_with_head, score_causal, score_seq2seq
from harness.backends.models import ModelRef
from harness.task.prompts import build_contexts, verbalizer_ids
from harness.task.spec import TaskSpec
from harness.types import Example, Prediction


def predict_with_prompt(spec: TaskSpec, ref: ModelRef, model: Any, tokenizer: Any, examples: Sequence[Example],
                        demos: Sequence[Example], max_length: int, batch_size: int) -> list[Prediction]:
    seq2seq = ref.family == "seq2seq"
    contexts = build_contexts(spec, tokenizer, examples, demos, max_length, strip_eos=not seq2seq)
    choices = verbalizer_ids(spec, tokenizer)
    scorer = score_seq2seq if seq2seq else score_causal
    scores = scorer(model, contexts, choices, tokenizer.pad_token_id, batch_size)
    return [_argmax_prediction(example, row) for example, row in zip(examples, scores)]


def predict_with_head(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int,
                      batch_size: int) -> list[Prediction]:
    probabilities = classify_with_head(model, tokenizer, examples, max_length, batch_size)
    return [_argmax_prediction(example, row) for example, row in zip(examples, probabilities)]


def _argmax_prediction(example: Example, scores: Sequence[float]) -> Prediction:
    """A non-finite score means the example could not be scored: a failure, never a guess."""
    finite = bool(scores) and all(math.isfinite(s) for s in scores)
    label = max(range(len(scores)), key=lambda k: scores[k]) if finite else None
    return Prediction(example_id=example.id, gold=example.label, label=label,
                      scores=tuple(round(float(s), 6) if math.isfinite(s) else float("nan") for s in scores))
