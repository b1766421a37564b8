"""Stage work for tasks whose answer is text: generation (summaries, answers, responses), language
modelling (perplexity + continuations) and extractive QA (a span head).

`stages.py` hands text tasks here: each function takes loaded parts and returns predictions or
training items; the pipeline owns loading, timing, storing.
"""
from __future__ import annotations

from typing import Any, Sequence

from harness.backends.generate import generate_batched, rolling_nll, target_nll
from harness.options import RunConfig
from harness.backends.batching import batch_loss
from harness.types import TrainItem
from harness.backends.models import ModelRef
from harness.backends.precision import autocast
from harness.progress import progress
from harness.task.prompts import build_prompts, use_chat_template
from harness.task.spec import ExtractiveQA, Generate, LanguageModel, TaskSpec
from harness.types import Example, Prediction


def predict_text(spec: TaskSpec, ref: ModelRef, config: RunConfig, model: Any, tokenizer: Any,
                 examples: Sequence[Example]) -> list[Prediction]:
    kind = spec.kind
    if isinstance(kind, ExtractiveQA):
        from harness.backends.qa_span import predict_spans

        answers = predict_spans(model, tokenizer, examples, config.max_length, kind.doc_stride, config.eval_batch_size,
                                max_answer_tokens=kind.max_answer_tokens)
        return [Prediction(e.id, -1, None, (round(score, 6),), output=text) for e, (text, score) in zip(examples, answers)]
    if isinstance(kind, LanguageModel):
        return _language_model(kind, config, model, tokenizer, examples)
    assert isinstance(kind, Generate)
    seq2seq = ref.family == "seq2seq"
    chat = use_chat_template(tokenizer, config.chat_template, seq2seq)
    budget = config.max_length if seq2seq else config.max_length - (config.max_new_tokens or kind.max_new_tokens)
    prompts = build_prompts(spec, tokenizer, examples, budget, chat=chat, strip_eos=not seq2seq)
    outputs = generate_batched(model, tokenizer, prompts, max_new_tokens=config.max_new_tokens or kind.max_new_tokens,
                              batch_size=config.eval_batch_size, stop=kind.stop, seq2seq=seq2seq)
    if kind.metrics == "squad_v2":
        return [Prediction(e.id, -1, None, (), output=text) for e, text in zip(examples, outputs)]
    # How likely the model finds the reference itself (response tokens only): perplexity needs no
    # generation and moves even when greedy outputs barely change.
    items = text_train_items(spec, ref, config, tokenizer, examples)
    nll = target_nll(model, items, pad_id=tokenizer.pad_token_id, batch_size=max(1, config.eval_batch_size // 2),
                     seq2seq=seq2seq)
    return [Prediction(e.id, -1, None, (round(total, 4), count), output=text)
            for e, text, (total, count) in zip(examples, outputs, nll)]


def _language_model(kind: LanguageModel, config: RunConfig, model: Any, tokenizer: Any,
                    examples: Sequence[Example]) -> list[Prediction]:
    documents = [tokenizer(e.texts[0], add_special_tokens=False)["input_ids"] for e in examples]
    nll = rolling_nll(model, documents, max_length=config.max_length, stride=min(kind.stride, config.max_length),
                      batch_size=config.eval_batch_size)
    prompts = [tokenizer(kind.continuation_split(e.texts[0])[0], add_special_tokens=False)["input_ids"] or
               [tokenizer.eos_token_id] for e in examples]
    # Words are ~1.3 tokens: leave room so the continuation can cover the reference's words.
    continuations = generate_batched(model, tokenizer, prompts, max_new_tokens=int(kind.continuation_words * 1.5),
                                    batch_size=config.eval_batch_size)
    return [Prediction(e.id, -1, None, (round(total, 4), count), output=" ".join(text.split()[: kind.continuation_words]))
            for e, (total, count), text in zip(examples, nll, continuations)]


def text_train_items(spec: TaskSpec, ref: ModelRef, config: RunConfig, tokenizer: Any,
                     examples: Sequence[Example]) -> list[TrainItem]:
    """Supervised targets: the reference after the prompt (prompt masked out of the loss), the
    whole text for language modelling, answer spans for extractive QA."""
    kind = spec.kind
    if isinstance(kind, ExtractiveQA):
        from harness.backends.qa_span import span_train_items

        return span_train_items(tokenizer, examples, config.max_length, kind.doc_stride)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if isinstance(kind, LanguageModel):
        return _packed_blocks(tokenizer, examples, config.max_length, eos)
    assert isinstance(kind, Generate)
    seq2seq = ref.family == "seq2seq"
    chat = use_chat_template(tokenizer, config.chat_template, seq2seq)
    items = []
    targets = [target_text(kind, e) for e in examples]
    target_ids = [tokenizer(" " + t if not seq2seq and not chat else t, add_special_tokens=False)["input_ids"][
                  : config.max_length // 2] + eos for t in targets]
    budget = [config.max_length - (0 if seq2seq else len(ids)) for ids in target_ids]
    for example, answer, room in zip(examples, target_ids, budget):
        (prompt,) = build_prompts(spec, tokenizer, [example], room, chat=chat, strip_eos=not seq2seq)
        if seq2seq:
            items.append(TrainItem(prompt, lm_labels=answer))
        else:
            items.append(TrainItem(prompt + answer, lm_labels=[-100] * len(prompt) + answer))
    return items


def target_text(kind: Generate, example: Example) -> str:
    """The text the model learns to write; an unanswerable question teaches the no-answer phrase."""
    if kind.metrics == "squad_v2":
        return example.references[0] if example.references else kind.no_answer
    return example.references[0]


def _packed_blocks(tokenizer: Any, examples: Sequence[Example], max_length: int, eos: list[int]) -> list[TrainItem]:
    """Language modelling packs documents (EOS-separated) into full blocks: no padding is trained."""
    stream: list[int] = []
    for example in examples:
        stream += tokenizer(example.texts[0], add_special_tokens=False)["input_ids"] + eos
    blocks = [stream[i: i + max_length] for i in range(0, len(stream), max_length)]
    return [TrainItem(block, lm_labels=list(block)) for block in blocks if len(block) > 1]


def validation_loss(model: Any, items: Sequence[TrainItem], pad_id: int, batch_size: int,
                    precision: str = "fp32") -> float:
    """Mean loss over validation items: per target token for LM items (the model's loss is a mean
    over a batch's target tokens, so each batch counts by its tokens and the value does not depend
    on --eval-batch-size), per example for span items (one start/end loss each)."""
    import torch

    from harness.backends.batching import collate

    device = next(model.parameters()).device
    shift = 0 if getattr(model.config, "is_encoder_decoder", False) else 1  # causal LMs predict token t+1
    total, weight = 0.0, 0
    model.eval()
    with torch.inference_mode(), autocast(precision, device), progress("loss", total=len(items), unit="ex") as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start: start + batch_size]
            batch = collate(chunk, pad_id, device)
            labels = batch.get("labels")
            targets = int((labels[:, shift:] != -100).sum()) if chunk[0].lm_labels is not None else len(chunk)
            if targets:
                total += float(batch_loss(model, batch, lm_targets=chunk[0].lm_labels is not None)) * targets
                weight += targets
            bar.advance(len(chunk))
    return total / max(1, weight)
