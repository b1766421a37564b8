"""Pinned loss curves (as torchtune's recipe tests pin theirs): a tiny GPT-2, a fixed seed, a few
optimizer steps, and the exact losses, learning rates, validations and log lines the training loop
gave before it was split into train/batching, optim, health, validate, state and launch. Any change
to the data order, the loss weighting over gradient accumulation, the schedule, the RNG use or the
best-weights restore moves these numbers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("torch")

from harness.options import RunConfig  # noqa: E402
from harness.types import TrainItem  # noqa: E402


def _lm_items(count: int, offset: int) -> list[TrainItem]:
    """Rows of 4 to 12 tokens, the first two masked out of the loss (a prompt)."""
    return [TrainItem(list(range(5 + offset + i, 9 + offset + i + (i * 7) % 9)),
                      lm_labels=[-100] * 2 + list(range(7 + offset + i, 9 + offset + i + (i * 7) % 9)))
            for i in range(count)]


def test_causal_lm_loss_curve_is_pinned(tiny_model: Callable[[str], Path]) -> None:
    """18 rows, batch 2, grad-accum 2: 9 batches, so 5 steps (the last one a single batch, whose
    gradient is scaled back to a full step's); cosine after one warmup step; validation every 3 steps
    on held-out loss; the better first validation's weights come back at the end."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.train.loop import train
    from harness.train.validate import validation_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"), dtype=torch.float32)
    held_out = _lm_items(6, 40)
    config = RunConfig(task="sst2", model="tiny", method="full", optimizer="adamw", lr=1e-3, batch_size=2,
                       grad_accum=2, epochs=1.0, warmup_ratio=0.2, schedule="cosine", evals_per_epoch=2,
                       max_grad_norm=1.0)
    lines: list[str] = []
    result = train(model, _lm_items(18, 0), config, 0, lambda m: {"loss": validation_loss(m, held_out, 0, 4)},
                   log=lines.append)
    steps = [point for point in result.curves if "loss" in point]
    assert [point["step"] for point in steps] == [1, 2, 3, 4, 5]
    assert [point["loss"] for point in steps] == pytest.approx(
        [6.6490864753723145, 6.580781936645508, 6.429357051849365, 6.287878036499023, 6.247744083404541], abs=1e-6)
    assert [point["lr"] for point in steps] == pytest.approx(
        [0.001, 0.001, 0.0008535533905932737, 0.0005, 0.00014644660940672628], abs=1e-12)
    validations = [(point["step"], point["val_loss"]) for point in result.curves if "val_loss" in point]
    assert [step for step, _ in validations] == [3, 5]
    assert [loss for _, loss in validations] == pytest.approx([6.707579122649299, 6.718514853053623], abs=1e-6)
    assert (result.steps, result.epochs, result.train_tokens, result.best_step) == (5, 1.0, 144, 3)
    assert lines == ["  step 3/5  loss 6.4294  val loss 6.7076", "  step 5/5  loss 6.2477  val loss 6.7185",
                     "  restoring the weights of step 3 (best val loss 6.7076; last, step 5: 6.7185)"]
    assert validation_loss(model, held_out, 0, 4) == pytest.approx(6.707579122649299, abs=1e-6)  # step 3's weights


def test_classifier_curve_with_early_stopping_is_pinned(tiny_model: Callable[[str], Path]) -> None:
    """A classification head, SGD with momentum, linear decay, scripted validation scores and
    --patience 1: the run stops after the first validation without gain, at step 6 of 12."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from harness.train.loop import train

    torch.manual_seed(0)  # the new head's initial weights
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model("gpt2"), num_labels=2, pad_token_id=0,
                                                               dtype=torch.float32)
    items = [TrainItem(list(range(5 + i, 9 + i + i % 5)), label=i % 2) for i in range(12)]
    config = RunConfig(task="sst2", model="tiny", method="full", optimizer="sgd-momentum", lr=0.05, batch_size=3,
                       grad_accum=1, epochs=3.0, warmup_ratio=0.0, schedule="linear", evals_per_epoch=2, patience=1)
    scores = iter([0.5, 0.9, 0.6, 0.8])
    lines: list[str] = []
    result = train(model, items, config, 0, lambda m: {"f1_macro": next(scores)}, log=lines.append,
                   criterion="f1_macro")
    steps = [point for point in result.curves if "loss" in point]
    assert [point["loss"] for point in steps] == pytest.approx(
        [0.7587601542472839, 0.8662886023521423, 0.7717873454093933, 0.7398386597633362, 0.5444307923316956,
         0.519627571105957], abs=1e-6)
    assert [point["lr"] for point in steps] == pytest.approx(
        [0.05, 0.04583333333333334, 0.04166666666666667, 0.037500000000000006, 0.03333333333333334,
         0.029166666666666664], abs=1e-12)
    assert (result.steps, result.epochs, result.train_tokens, result.best_step, result.stopped_early) == (
        6, 1.5, 103, 4, True)
    assert lines == ["  step 2/12  loss 0.8663  val f1_macro 0.5000", "  step 4/12  loss 0.7398  val f1_macro 0.9000",
                     "  step 6/12  loss 0.5196  val f1_macro 0.6000", "  early stop: no gain in 1 evaluations",
                     "  restoring the weights of step 4 (best val f1_macro 0.9000; last, step 6: 0.6000)"]
