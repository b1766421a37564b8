"""Prompt scoring: the batched, KV-cached scorer must equal the naive definition
log P(label | prompt) = sum of per-token log-probs of the label after the prompt, computed one
(prompt, label) pair at a time with no padding and no cache."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.backends.hf import score_causal, score_seq2seq  # noqa: E402

CAUSAL = ("gpt2", "gpt_neo", "llama")


def _naive_causal(model, context: list[int], choice: list[int]) -> float:
    ids = torch.tensor([context + choice])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(logp[len(context) - 1 + k, token].item() for k, token in enumerate(choice))


def _naive_seq2seq(model, context: list[int], choice: list[int]) -> float:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([context]), labels=torch.tensor([choice]))
    logp = torch.log_softmax(out.logits[0].float(), dim=-1)
    return sum(logp[k, token].item() for k, token in enumerate(choice))


def _prompts_and_labels(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    texts = ["Review: the film was good\nSentiment:", "Review: a long and rather tedious story about "
             "nothing at all, told twice\nSentiment:", "Review: ok\nSentiment:"]
    contexts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # One-, two- and three-token labels: the multi-token path continues from the KV cache.
    labels = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in (" good", " bad movie", " very bad movie")]
    assert sorted(len(label) for label in labels)[-1] > 1, "the test needs at least one multi-token label"
    return contexts, labels


@pytest.mark.parametrize("family", CAUSAL)
def test_causal_scores_equal_naive_per_choice_computation(family, tiny_model):
    path = tiny_model(family)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    contexts, labels = _prompts_and_labels(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for batch_size in (1, 3):  # batch 3 mixes prompt lengths: left padding must not leak into scores
        scores = score_causal(model, contexts, labels, pad, batch_size)
        for context, row in zip(contexts, scores):
            expected = [_naive_causal(model, context, label) for label in labels]
            assert row == pytest.approx(expected, abs=2e-4)


def test_seq2seq_scores_equal_naive_per_choice_computation(tiny_model):
    path = tiny_model("t5")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    contexts, labels = _prompts_and_labels(tokenizer)
    for batch_size in (1, 3):
        scores = score_seq2seq(model, contexts, labels, tokenizer.pad_token_id, batch_size)
        for context, row in zip(contexts, scores):
            expected = [_naive_seq2seq(model, context, label) for label in labels]
            assert row == pytest.approx(expected, abs=2e-4)


def test_scores_do_not_depend_on_batch_composition(tiny_model):
    """Zero-shot predictions must not change with the batch size (beyond float noise)."""
    path = tiny_model("llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    words = "good bad fine dull bright sad happy long short odd".split()
    contexts = [tokenizer(f"Review: {' '.join(words[: 1 + i])}\nSentiment:", add_special_tokens=False)["input_ids"]
                for i in range(len(words))]
    labels = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in (" good", " bad")]
    one = score_causal(model, contexts, labels, tokenizer.eos_token_id, 1)
    many = score_causal(model, contexts, labels, tokenizer.eos_token_id, 4)
    for a, b in zip(one, many):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_few_shot_prefix_is_encoded_once_with_the_same_scores(tiny_model, family):
    """Few-shot contexts share their demonstrations: scoring them from one prefix KV cache gives
    the scores of encoding every context whole (single- and multi-token labels)."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.backends.hf import score_causal, shared_prefix_length

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model(family)).eval()
    prefix = list(range(5, 45))
    contexts = [prefix + [50 + i] * (1 + i % 4) for i in range(9)]
    choices = [[7], [8, 9, 10]]
    assert shared_prefix_length(contexts) == 40 and shared_prefix_length([[1, 2], [1, 2]]) == 1
    shared = score_causal(model, contexts, choices, pad_id=0, batch_size=4)
    whole = score_causal(model, contexts, choices, pad_id=0, batch_size=4, share_prefix=False)
    assert torch.allclose(torch.tensor(shared), torch.tensor(whole), atol=1e-4)


@pytest.mark.parametrize("rows_per_pass", [1, 2, 64])
def test_multi_token_labels_in_any_grouping_equal_naive(rows_per_pass, tiny_model, monkeypatch):
    """Continuations go one label per pass (cache cropped back), several per pass over cache copies,
    or all in one: the scores are the naive ones every way."""
    import harness.backends.hf as hf

    monkeypatch.setattr(hf, "CONTINUATION_ROWS", rows_per_pass)
    path = tiny_model("llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    contexts, _ = _prompts_and_labels(tokenizer)
    labels = [tokenizer(v, add_special_tokens=False)["input_ids"]
              for v in (" good", " bad movie", " very bad movie", " not good at all", " fine")]
    assert sum(len(label) > 1 for label in labels) >= 3
    scores = score_causal(model, contexts, labels, tokenizer.eos_token_id, 1)
    for context, row in zip(contexts, scores):
        assert row == pytest.approx([_naive_causal(model, context, label) for label in labels], abs=2e-4)
