"""LanguageModel: model raw text. Perplexity over held-out documents (rolling windows), and
continuation quality (BLEU, ROUGE) from each document's first words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.backends.base import Backend, Generation, RollingLoglikelihood
from harness.kinds.base import KindBase, refuse_generation_options, refuse_head_options
from harness.kinds.scoring_helpers import perplexity_with_ci, text_metric_names, with_values
from harness.types import Example, Prediction, TrainItem

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.models import ModelRef
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec


@dataclass(frozen=True)
class LanguageModel(KindBase):
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

    @property  # type: ignore[override]
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def continuation_split(self, text: str) -> tuple[str, str]:
        """(prompt, reference continuation) of one document."""
        words = text.split()
        return (" ".join(words[: self.prompt_words]),
                " ".join(words[self.prompt_words: self.prompt_words + self.continuation_words]))

    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        return [Example(id=ids[i], texts=texts[i]) for i in range(len(frame))]

    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        refuse_generation_options(spec, config, "(language modelling) scores raw text and continues it by a fixed "
                                                "length")
        refuse_head_options(spec, config, baselines, "LanguageModel")

    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        tokenizer = backend.tokenizer
        documents = [tokenizer(e.texts[0], add_special_tokens=False)["input_ids"] for e in examples]
        stride = min(self.stride, config.max_length)
        scored = backend.rolling_loglikelihood([RollingLoglikelihood(tuple(ids), config.max_length, stride)
                                                for ids in documents])
        prompts = [tokenizer(self.continuation_split(e.texts[0])[0], add_special_tokens=False)["input_ids"] or
                   [tokenizer.eos_token_id] for e in examples]
        # Words are ~1.3 tokens: leave room so the continuation can cover the reference's words.
        new_tokens = int(self.continuation_words * 1.5)
        continuations = backend.generate([Generation(tuple(prompt), new_tokens) for prompt in prompts])
        return [Prediction(e.id, -1, None, (round(-found.logprob, 4), found.tokens),
                           output=" ".join(text.split()[: self.continuation_words]))
                for e, found, text in zip(examples, scored, continuations)]

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        """Token-weighted perplexity over the documents (the headline), continuation BLEU/ROUGE."""
        # lazy: keeps numpy, nupunkt out of `bench --help`
        from harness.metrics.text import text_report

        totals = [(float(p.scores[0]), int(p.scores[1])) for p in predictions]
        references = [self.continuation_split(e.texts[0])[1] for e in examples]
        report = text_report([p.output for p in predictions], references, meteor=False, seed=seed)
        per_example = report.pop("per_example")
        nll_per_token = [nll / tokens if tokens else 0.0 for nll, tokens in totals]
        tokens = sum(t for _, t in totals)
        perplexity, nll_ci = perplexity_with_ci(totals, seed)
        report.update(perplexity=perplexity,
                      nll_per_token={"value": sum(t[0] for t in totals) / max(1, tokens), "ci": list(nll_ci)},
                      tokens_scored=tokens)
        return report, with_values(predictions, {"nll": nll_per_token, **per_example})

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        return text_metric_names(self.headline)

    def shown(self, examples: Sequence["Example"]) -> tuple[dict[str, str], dict[str, str]]:
        """A document's held-out prompt, and its continuation."""
        pairs = {e.id: self.continuation_split(e.texts[0]) for e in examples}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}

    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence["Example"]) -> list["TrainItem"]:
        """Documents packed (EOS-separated) into full blocks of --max-length: no padding is trained."""
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        stream: list[int] = []
        for example in examples:
            stream += tokenizer(example.texts[0], add_special_tokens=False)["input_ids"] + eos
        blocks = [stream[i: i + config.max_length] for i in range(0, len(stream), config.max_length)]
        return [TrainItem(block, lm_labels=list(block)) for block in blocks if len(block) > 1]
