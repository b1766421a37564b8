"""LM losses from the target positions' logits alone equal the model's own full-logit loss, in
value and in gradients, for every family with an LM head (plain and under LoRA), and the LM head
really runs on the target rows only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from harness.backends.generate import rolling_nll, target_nll
from harness.backends.target_logits import lm_loss, logits_at, target_positions
from harness.backends.batching import collate
from harness.types import TrainItem

LM_FAMILIES = ("gpt2", "gpt_neo", "llama", "t5")


def _model(tiny_model: Callable[[str], Path], family: str, lora: bool = False) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    model = auto.from_pretrained(tiny_model(family), dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                 task_type="SEQ_2_SEQ_LM" if family == "t5" else "CAUSAL_LM"))
    return model.eval()  # dropout off (gradients flow all the same): the comparison is exact


def _items(family: str) -> list[TrainItem]:
    """Three rows of different lengths: a masked prompt then a few target tokens (causal), or a
    source and a separate target sequence (seq2seq)."""
    rows = [(list(range(5, 17)), [40, 41, 42]), (list(range(20, 26)), [43]), (list(range(30, 45)), [44, 45, 46, 47])]
    if family == "t5":
        return [TrainItem(prompt, lm_labels=target) for prompt, target in rows]
    return [TrainItem(prompt + target, lm_labels=[-100] * len(prompt) + target) for prompt, target in rows]


def _grads(model: Any) -> dict[str, Any]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", LM_FAMILIES)
def test_target_only_loss_and_gradients_equal_the_models_own(tiny_model: Callable[[str], Path], family: str,
                                                            lora: bool) -> None:
    import torch

    model = _model(tiny_model, family, lora)
    inputs = collate(_items(family), pad_id=0, device=torch.device("cpu"))
    reference = model(**inputs).loss
    reference.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    loss = lm_loss(model, inputs)
    loss.backward()
    got = _grads(model)
    assert abs(float(loss) - float(reference)) < 1e-5, (float(loss), float(reference))
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_the_lm_head_runs_on_the_target_rows_only(tiny_model: Callable[[str], Path], family: str) -> None:
    import torch

    model = _model(tiny_model, family)
    inputs = collate(_items(family), pad_id=0, device=torch.device("cpu"))
    labels = inputs.pop("labels")
    if family == "t5":
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
    select, targets = target_positions(labels, seq2seq=family == "t5")
    shapes: list[tuple[int, ...]] = []
    model.get_output_embeddings().register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    with torch.no_grad():
        logits = logits_at(model, inputs, select)
        full = model(**inputs).logits
    assert len(targets) == 8 and shapes[0] == (1, 8, full.shape[-1])  # 3 + 1 + 4 target tokens, not B x T
    assert torch.allclose(logits, full[select], atol=1e-5)


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_target_nll_equals_the_full_log_softmax(tiny_model: Callable[[str], Path], family: str) -> None:
    import torch

    model = _model(tiny_model, family)
    items = _items(family)
    got = target_nll(model, items, pad_id=0, batch_size=2, seq2seq=family == "t5")
    with torch.no_grad():
        for item, (nll, count) in zip(items, got):
            inputs = collate([item], pad_id=0, device=torch.device("cpu"))
            loss = model(**inputs).loss  # mean NLL of the item's target tokens
            assert count == sum(label != -100 for label in item.lm_labels or ())
            assert abs(nll - float(loss) * count) < 1e-4, (nll, float(loss) * count)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rolling_nll_equals_the_full_log_softmax(tiny_model: Callable[[str], Path], family: str) -> None:
    """Windows of 8 with stride 4 over documents of 5, 13 and 21 tokens: each token after the
    first scored once, with the context its window gives it."""
    import torch

    model = _model(tiny_model, family)
    documents = [list(range(3, 8)), list(range(10, 23)), list(range(30, 51))]
    got = rolling_nll(model, documents, max_length=8, stride=4, batch_size=2)
    with torch.no_grad():
        for doc, (nll, count) in zip(documents, got):
            expected, scored_until, end = 0.0, 1, min(8, len(doc))
            while scored_until < len(doc):
                window = doc[max(0, end - 8):end]
                logp = torch.log_softmax(model(input_ids=torch.tensor([window])).logits[0].float(), dim=-1)
                fresh = end - scored_until
                for pos in range(len(window) - 1 - fresh, len(window) - 1):
                    expected -= float(logp[pos, window[pos + 1]])
                scored_until, end = end, min(end + 4, len(doc))
            assert count == len(doc) - 1 and abs(nll - expected) < 1e-4, (nll, expected)
