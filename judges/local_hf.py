"""A local Hugging Face causal LM as the judge (`hf:smollm2`, `hf:/path/to/model`, `hf:org/name`),
so judging works fully offline. Structured output the local way: the prompt (in the model's chat
template when it has one) is followed by the start of the JSON answer (`{"score": `), and the
model only writes the value. Generation is the harness's own batched generation: greedy for a single
sample, seeded sampling for repeated samples.
"""
from __future__ import annotations

from typing import Any, Sequence

from harness.judging.backend import JudgeOptions, JudgeRequest, JudgeSpec, Reply
from harness.task.registry import judge

ANSWER_TOKENS = 8   # after the prefill a score or verdict is a few tokens; more is rambling
MAX_PROMPT_TOKENS = 2048  # longer prompts keep their end, where the responses and the answer format are


class LocalJudge:
    concurrency = 1

    def __init__(self, spec: JudgeSpec, options: JudgeOptions):
        from harness.backends.models import resolve_model

        self.ref = resolve_model(spec.model)  # a bad name fails now, before any judging
        if self.ref.family != "causal":
            from harness.errors import BenchError

            raise BenchError(f"--judge hf:{spec.model}: a local judge must be a causal LM (got {self.ref.family})")
        self.model = spec.model
        self.id = f"hf:{spec.model}"
        self.batch_size = options.batch_size
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:  # only when something is not in the cache
            from harness.backends.models import load_lm, load_tokenizer

            tokenizer = load_tokenizer(self.ref, padding_side="left")
            self._loaded = (load_lm(self.ref).eval(), tokenizer)
        return self._loaded

    def complete(self, request: JudgeRequest) -> Reply:
        return self.complete_batch([request])[0]

    def complete_batch(self, requests: Sequence[JudgeRequest]) -> list[Reply]:
        model, tokenizer = self._load()
        window = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        keep = min(MAX_PROMPT_TOKENS, (window or MAX_PROMPT_TOKENS) - ANSWER_TOKENS)
        prompts = [self._encode(tokenizer, r)[-keep:] for r in requests]
        groups: dict[tuple[float, int], list[int]] = {}  # requests sampled alike run together
        for i, request in enumerate(requests):
            groups.setdefault((request.temperature, request.seed), []).append(i)
        replies: list[Reply] = [Reply("")] * len(requests)
        for (temperature, seed), members in groups.items():
            texts = self._generate(model, tokenizer, [prompts[i] for i in members], temperature, seed)
            for i, text in zip(members, texts):
                written = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                replies[i] = Reply(requests[i].answer.prefill + first_object_end(text), len(prompts[i]), written)
        return replies

    def _generate(self, model: Any, tokenizer: Any, prompts: list[list[int]], temperature: float,
                  seed: int) -> list[str]:
        """Batched generation; out of device memory, the batch size halves (and stays halved)."""
        import torch

        from harness.backends.generate import generate_batched
        from harness.errors import BenchError
        from harness.faults import reached

        while True:
            try:
                reached("judge-batch", self.batch_size)
                return generate_batched(model, tokenizer, prompts, max_new_tokens=ANSWER_TOKENS,
                                        batch_size=self.batch_size, temperature=temperature, seed=seed)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise BenchError(f"judge {self.id} runs out of device memory even at one prompt per pass; use "
                                     "a smaller judge model") from None
                self.batch_size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    @staticmethod
    def _encode(tokenizer: Any, request: JudgeRequest) -> list[int]:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": request.prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text + request.answer.prefill, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(request.prompt + "\n\n" + request.answer.prefill)["input_ids"]
        return list(ids)


def first_object_end(text: str) -> str:
    """The written rest of the prefilled JSON answer, up to its closing brace: a small model tends
    to go on with a second object ({"winner": "A"}\n{"winner": "B"), which the strict parser would
    rightly reject as two verdicts."""
    return text[: text.index("}") + 1] if "}" in text else text


@judge("hf")
def local_model(spec: JudgeSpec, options: JudgeOptions) -> LocalJudge:
    return LocalJudge(spec, options)
