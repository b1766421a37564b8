"""Examples -> prompt token ids for zero-/few-shot scoring, within the model's length budget.

Long fields are clipped (by tokens, keeping the start) so the prompt's instruction and answer
cue always survive truncation; the label verbalizers always fit after it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from harness.errors import BenchError
from harness.task.spec import TaskSpec
from harness.types import Example

SHOT_SEPARATOR = "\n\n"


def clip_text(tokenizer: Any, text: str, max_tokens: int) -> str:
    return clip_texts(tokenizer, [text], max_tokens)[0]


def clip_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Each text cut to its first `max_tokens` tokens (unchanged when it fits)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [text if len(ids) <= max_tokens else tokenizer.decode(ids[: max(1, max_tokens)])
            for text, ids in zip(texts, encoded)]


def choose_shots(train: Sequence[Example], shots: int, num_labels: int, seed: int) -> list[Example]:
    """K demonstrations cycling through the labels (seeded), shared by every eval example."""
    if shots == 0:
        return []
    rng = np.random.default_rng(seed + 1)
    by_label = [[e for e in train if e.label == k] for k in range(num_labels)]
    pools = [list(rng.permutation(len(pool))) for pool in by_label]
    chosen: list[Example] = []
    label = 0
    while len(chosen) < shots and any(pools):
        if pools[label % num_labels]:
            chosen.append(by_label[label % num_labels][pools[label % num_labels].pop()])
        label += 1
    return chosen


def build_contexts(spec: TaskSpec, tokenizer: Any, examples: Sequence[Example], demos: Sequence[Example],
                   max_length: int, *, strip_eos: bool = True) -> list[list[int]]:
    """Token ids of each example's prompt (demos first), with room left for the longest verbalizer."""
    verbalizer_tokens = max(len(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in spec.kind.verbalizers)
    budget = max_length - verbalizer_tokens
    fields = len(spec.kind.fields)
    per_field = max(4, budget // (len(demos) + 1) // fields - 8)
    prefix = "".join(
        spec.render([clip_text(tokenizer, t, per_field) for t in demo.texts]) + spec.kind.verbalizers[demo.label]
        + SHOT_SEPARATOR for demo in demos)
    contexts: list[list[int]] = []
    for start in range(0, len(examples), ENCODE_CHUNK):
        contexts += _fit(spec, tokenizer, examples[start:start + ENCODE_CHUNK], prefix, budget, strip_eos)
    return contexts


# Examples per tokenizer call (prompts here, classification heads in backends.hf). One call holds
# every whole text's encoding (tokens, offsets, masks) until it returns: all 25,000 IMDB reviews
# at once took 1.3 GB (SmolLM2's tokenizer) to 2.7 GB (a small vocabulary) for prompts that keep
# 128 tokens each. A chunk this size is still a batch the fast tokenizers encode in parallel.
ENCODE_CHUNK = 1024


def _fit(spec: TaskSpec, tokenizer: Any, examples: Sequence[Example], prefix: str, budget: int,
         strip_eos: bool) -> list[list[int]]:
    """The prompts' token ids, each within `budget`."""
    # One batched tokenizer call per pass (fast tokenizers encode a batch in parallel); only the
    # examples over budget are re-rendered with clipped fields.
    contexts = _encode_all(tokenizer, [prefix + spec.render(e.texts) for e in examples], strip_eos)
    too_long = [i for i, ids in enumerate(contexts) if len(ids) > budget]
    if too_long:
        # Clip those examples' fields to fit: the remaining budget split evenly across fields.
        fields = len(spec.kind.fields)
        fixed = len(_encode(tokenizer, prefix + spec.render([""] * fields), strip_eos))
        share = max(1, (budget - fixed) // fields - 2)
        clipped = clip_texts(tokenizer, [t for i in too_long for t in examples[i].texts], share)
        rendered = [prefix + spec.render(clipped[k * fields:(k + 1) * fields]) for k in range(len(too_long))]
        for i, ids in zip(too_long, _encode_all(tokenizer, rendered, strip_eos)):
            contexts[i] = ids[-budget:]  # last resort: keep the answer cue at the end
    return contexts


def _encode(tokenizer: Any, text: str, strip_eos: bool) -> list[int]:
    return _encode_all(tokenizer, [text], strip_eos)[0]


def _encode_all(tokenizer: Any, texts: Sequence[str], strip_eos: bool) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(list(texts))["input_ids"]
    # A few causal tokenizers append EOS to every text; the answer must follow the prompt directly.
    eos = tokenizer.eos_token_id if strip_eos else None
    return [ids[:-1] if eos is not None and len(ids) > 1 and ids[-1] == eos else ids for ids in encoded]


def verbalizer_ids(spec: TaskSpec, tokenizer: Any) -> list[list[int]]:
    return [tokenizer(v, add_special_tokens=False)["input_ids"] for v in spec.kind.verbalizers]


def use_chat_template(tokenizer: Any, setting: str, seq2seq: bool) -> bool:
    """`--chat-template auto` applies the template when the tokenizer has one (instruct models)."""
    has_template = bool(getattr(tokenizer, "chat_template", None)) and not seq2seq
    if setting == "on" and not has_template:
        raise BenchError("--chat-template on: this model's tokenizer has no chat template; use auto or off")
    return has_template if setting == "auto" else setting == "on"


def encode_prompt(tokenizer: Any, text: str, *, chat: bool, strip_eos: bool) -> list[int]:
    """Prompt text -> ids, wrapped as one user turn plus the assistant cue when `chat`."""
    if chat:
        wrapped = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=False)
        return tokenizer(wrapped, add_special_tokens=False)["input_ids"]
    return _encode(tokenizer, text, strip_eos)


def build_prompts(spec: TaskSpec, tokenizer: Any, examples: Sequence[Example], budget: int, *, chat: bool,
                  strip_eos: bool) -> list[list[int]]:
    """Generation prompts within `budget` tokens: long fields (a dialogue, a context) are clipped
    from the end so the instruction and the answer cue always survive."""
    fields = len(spec.kind.fields)
    fixed = len(encode_prompt(tokenizer, spec.render([""] * fields), chat=chat, strip_eos=strip_eos))
    if budget < fixed + 8 * fields:  # clipping from the left would cut the template itself
        raise BenchError(f"the {spec.name} prompt template alone takes {fixed} tokens"
                         f"{' with the chat template' if chat else ''}, and --max-length leaves {budget} for the "
                         f"prompt here: raise --max-length by at least {fixed + 8 * fields - budget}"
                         f"{' or use --chat-template off' if chat else ''}")
    prompts = []
    for example in examples:
        ids = encode_prompt(tokenizer, spec.render(example.texts), chat=chat, strip_eos=strip_eos)
        if len(ids) > budget:
            lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in example.texts]
            room = max(fields, budget - fixed - 2 * fields)
            # Clip only the fields longer than a fair share, so a short question keeps every word.
            share = room // fields
            spare = room - sum(min(n, share) for n in lengths)
            long_fields = sum(1 for n in lengths if n > share) or 1
            limits = [n if n <= share else share + spare // long_fields for n in lengths]
            clipped = [clip_text(tokenizer, t, limit) for t, limit in zip(example.texts, limits)]
            ids = encode_prompt(tokenizer, spec.render(clipped), chat=chat, strip_eos=strip_eos)[-budget:]
        prompts.append(ids)
    return prompts
