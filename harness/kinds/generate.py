"""Generate: write text from a prompt (a summary, an answer, an instruction's response), scored
against reference texts (ROUGE-1/2/L/Lsum, BLEU, METEOR) and by the reference's own perplexity."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.backends.base import Backend, Generation, Loglikelihood
from harness.errors import BenchError
from harness.kinds.base import KindBase, refuse_head_options
from harness.kinds.scoring_helpers import perplexity_with_ci, same_answer_warnings, text_metric_names, with_values
from harness.types import Example, Prediction, TrainItem

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.models import ModelRef
    from harness.options import RunConfig
    from harness.task.spec import TaskSpec

# A decoder generates inside --max-length: the prompt must keep at least this many tokens.
MIN_PROMPT_TOKENS = 32


@dataclass(frozen=True)
class Generate(KindBase):
    """Write text from a prompt: a summary, an answer, an instruction's response.

    Zero-shot = greedy generation from the prompt; fine-tuning = supervised on `target` with the
    prompt tokens masked out of the loss (causal) or as the decoder target (seq2seq). Scored with
    ROUGE-1/2/L/Lsum, BLEU, METEOR and the reference's perplexity (SQuAD-scored answers:
    `GenerateSquad`).
    """

    fields: tuple[str, ...]  # type: ignore[assignment]
    target: str  # column with the reference text
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()  # generation is cut at the first of these strings

    headline: ClassVar[str] = "rougeL"
    judgeable: ClassVar[bool] = True
    uses_meteor: ClassVar[bool] = True
    # The name error lines call the kind by (a SQuAD-scored generation is still a Generate task).
    shown_name: ClassVar[str] = "Generate"

    def columns(self) -> tuple[str, ...]:
        return (*self.fields, self.target)

    # --- data --------------------------------------------------------------------------------
    def examples(self, frame: "pd.DataFrame", ids: Sequence[str], texts: Sequence[tuple[str, ...]],
                 where: str) -> list["Example"]:
        # lazy: keeps numpy, pandas out of `bench --help`
        from harness.task.data import check_texts

        check_texts(frame, (self.target,), where)
        targets = frame[self.target].tolist()
        return [Example(id=ids[i], texts=texts[i], references=(targets[i],)) for i in range(len(frame))]

    # --- planning ----------------------------------------------------------------------------
    def check(self, spec: "TaskSpec", ref: "ModelRef", config: "RunConfig", baselines: Sequence[str]) -> None:
        refuse_head_options(spec, config, baselines, self.shown_name)
        self._check_prompt_room(ref, config)

    def _check_prompt_room(self, ref: "ModelRef", config: "RunConfig") -> None:
        """A decoder generates inside --max-length, so the prompt gets what the new tokens leave."""
        if ref.family == "seq2seq":
            return
        new_tokens = self.generated_tokens(config)
        room = config.max_length - new_tokens
        if room < MIN_PROMPT_TOKENS:
            raise BenchError(f"--max-length {config.max_length} leaves {room} prompt tokens after {new_tokens} "
                             f"generated ones (--max-new-tokens); use --max-length "
                             f"{new_tokens + 4 * MIN_PROMPT_TOKENS} or more, or a smaller --max-new-tokens")

    def generated_tokens(self, config: "RunConfig") -> int:
        return config.max_new_tokens or self.max_new_tokens

    # --- evaluation --------------------------------------------------------------------------
    def predict(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                demos: Sequence["Example"], config: "RunConfig", objective: str) -> list["Prediction"]:
        outputs = self._generate(spec, backend, examples, config)
        # How likely the model finds the reference itself (response tokens only): perplexity needs no
        # generation and moves even when greedy outputs barely change.
        pairs = self._target_pairs(spec, backend.tokenizer, backend.seq2seq, config, examples)
        logprobs = backend.loglikelihood([Loglikelihood(tuple(prompt), (tuple(answer),)) for prompt, answer in pairs])
        counts = [scored_tokens(prompt, answer, backend.seq2seq) for prompt, answer in pairs]
        return [Prediction(e.id, -1, None, (round(-logprob, 4), count), output=text)
                for e, text, (logprob,), count in zip(examples, outputs, logprobs, counts)]

    def _generate(self, spec: "TaskSpec", backend: "Backend", examples: Sequence["Example"],
                  config: "RunConfig") -> list[str]:
        """Greedy answers to the task's prompts, which get what --max-length leaves after the new tokens."""
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import build_prompts, use_chat_template

        seq2seq = backend.seq2seq
        chat = use_chat_template(backend.tokenizer, config.chat_template, seq2seq)
        new_tokens = self.generated_tokens(config)
        budget = config.max_length if seq2seq else config.max_length - new_tokens
        prompts = build_prompts(spec, backend.tokenizer, examples, budget, chat=chat, strip_eos=not seq2seq)
        return backend.generate([Generation(tuple(prompt), new_tokens, tuple(self.stop)) for prompt in prompts])

    def score(self, spec: "TaskSpec", examples: Sequence["Example"], predictions: Sequence["Prediction"],
              seed: int) -> tuple[dict[str, Any], list["Prediction"]]:
        # lazy: keeps numpy, nupunkt out of `bench --help`
        from harness.metrics.text import text_report

        report = text_report([p.output for p in predictions], [list(e.references) for e in examples], seed=seed)
        per_example = report.pop("per_example")
        if predictions and all(len(p.scores) == 2 for p in predictions):
            # Reference (response-token) perplexity, token-weighted, as for language modelling.
            totals = [(float(p.scores[0]), int(p.scores[1])) for p in predictions]
            report["perplexity"] = perplexity_with_ci(totals, seed)[0]
            per_example["nll"] = [nll / tokens if tokens else 0.0 for nll, tokens in totals]
        return same_answer_warnings([p.output for p in predictions], report), with_values(predictions, per_example)

    def metric_names(self, spec: "TaskSpec") -> list[str]:
        return text_metric_names(self.headline)

    # --- training ----------------------------------------------------------------------------
    def train_items(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                    examples: Sequence["Example"]) -> list["TrainItem"]:
        """The reference after the prompt, the prompt masked out of the loss (causal), or the
        reference as the decoder target (seq2seq)."""
        pairs = self._target_pairs(spec, tokenizer, seq2seq, config, examples)
        if seq2seq:
            return [TrainItem(prompt, lm_labels=answer) for prompt, answer in pairs]
        return [TrainItem(prompt + answer, lm_labels=[-100] * len(prompt) + answer) for prompt, answer in pairs]

    def _target_pairs(self, spec: "TaskSpec", tokenizer: Any, seq2seq: bool, config: "RunConfig",
                      examples: Sequence["Example"]) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, target ids + EOS) per example: the target takes up to half of --max-length,
        the prompt what is left (all of it for a seq2seq encoder)."""
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import build_prompts, use_chat_template

        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        chat = use_chat_template(tokenizer, config.chat_template, seq2seq)
        targets = [self.target_text(e) for e in examples]
        target_ids = [tokenizer(" " + t if not seq2seq and not chat else t, add_special_tokens=False)["input_ids"][
                      : config.max_length // 2] + eos for t in targets]
        pairs = []
        for example, answer in zip(examples, target_ids):
            room = config.max_length - (0 if seq2seq else len(answer))
            (prompt,) = build_prompts(spec, tokenizer, [example], room, chat=chat, strip_eos=not seq2seq)
            pairs.append((prompt, answer))
        return pairs

    def target_text(self, example: "Example") -> str:
        """The text the model learns to write."""
        return example.references[0]

    def prompt_record(self, spec: "TaskSpec", tokenizer: Any, config: "RunConfig", seq2seq: bool) -> dict[str, Any]:
        # lazy: keeps numpy out of `bench --help`
        from harness.task.prompts import use_chat_template

        return {"chat_template": use_chat_template(tokenizer, config.chat_template, seq2seq)}


def scored_tokens(context: Sequence[int], continuation: Sequence[int], seq2seq: bool) -> int:
    """Tokens a continuation's log-probability covers: all of them, but a causal model scores no
    token without one before it (an empty context leaves the first unscored)."""
    return len(continuation) - (0 if seq2seq or context else 1)
