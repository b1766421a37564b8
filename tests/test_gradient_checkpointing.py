"""--gradient-checkpointing: the blocks really recompute in the backward pass, and the loss and
gradients equal training without it (tiny models, plain and LoRA, dropout on); `auto` settles to
on only for LM-objective training on text targets; the new option leaves run ids unchanged."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.backends.batching import collate
from harness.backends.target_logits import lm_loss
from harness.errors import BenchError
from harness.options import RunConfig
from harness.resolve import validate
from harness.train.methods import apply_method, gradient_checkpointing_wanted, transformer_blocks
from harness.types import TrainItem


def _config(method: str = "lora", **values: Any) -> RunConfig:
    return RunConfig(task="samsum", model="tiny", method=method, lora_rank=4, **values)


def _items(seq2seq: bool) -> list[TrainItem]:
    rows = [(list(range(5, 17)), [40, 41, 42]), (list(range(20, 26)), [43]), (list(range(30, 45)), [44, 45, 46, 47])]
    if seq2seq:
        return [TrainItem(prompt, lm_labels=target) for prompt, target in rows]
    return [TrainItem(prompt + target, lm_labels=[-100] * len(prompt) + target) for prompt, target in rows]


def _train_step(tiny_model: Callable[[str], Path], family: str, method: str,
                checkpointing: bool) -> tuple[float, dict[str, Any], int]:
    """One forward and backward as training runs it (train mode, the target-only loss); returns the
    loss, the gradients and how many times the first block ran."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = family == "t5"
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto.from_pretrained(tiny_model(family), dtype=torch.float32)
    torch.manual_seed(0)  # the same LoRA matrices and dropout masks either way
    model = apply_method(model, _config(method), "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM", checkpointing)
    calls = []  # of a layer inside the first block (transformers checkpoints a block's forward, not its hooks)
    inner = next(module for module in transformer_blocks(model)[0].modules() if not list(module.children()))
    inner.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    loss = lm_loss(model, collate(_items(seq2seq), pad_id=0, device=torch.device("cpu")))
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, len(calls)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_checkpointed_loss_and_gradients_equal_the_plain_ones(tiny_model: Callable[[str], Path], family: str,
                                                             method: str) -> None:
    import torch

    loss, grads, plain_calls = _train_step(tiny_model, family, method, checkpointing=False)
    assert any(grad.abs().sum() > 0 for grad in grads.values())
    checkpointed_loss, checkpointed_grads, calls = _train_step(tiny_model, family, method, checkpointing=True)
    assert plain_calls == 1 and calls == 2  # the block ran again in the backward pass: really checkpointed
    assert abs(checkpointed_loss - loss) <= 1e-6
    assert grads.keys() == checkpointed_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=0, atol=1e-6, msg=name)
    if method == "lora":
        assert all("lora_" in name for name in grads)  # frozen embeddings: only the adapters learn


def test_auto_is_on_for_lm_training_on_text_targets_only(tiny_model: Callable[[str], Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"))
    assert gradient_checkpointing_wanted(model, _config(objective="lm"), text_targets=True)
    assert not gradient_checkpointing_wanted(model, _config(objective="lm"), text_targets=False)
    assert not gradient_checkpointing_wanted(model, _config(objective="head"), text_targets=True)
    assert not gradient_checkpointing_wanted(model, _config(objective="lm", gradient_checkpointing="off"), True)
    assert gradient_checkpointing_wanted(model, _config(objective="head", gradient_checkpointing="on"), False)


def test_on_for_a_model_transformers_cannot_checkpoint_is_one_line() -> None:
    import torch

    class Plain(torch.nn.Module):
        supports_gradient_checkpointing = False

    with pytest.raises(BenchError, match="does not support it"):
        apply_method(Plain(), _config("full", gradient_checkpointing="on"), "CAUSAL_LM", checkpointing=True)
    assert not gradient_checkpointing_wanted(Plain(), _config(objective="lm"), text_targets=True)


def test_unknown_value_is_refused() -> None:
    with pytest.raises(BenchError, match="--gradient-checkpointing"):
        validate(_config(gradient_checkpointing="yes"))


def test_the_default_leaves_run_ids_unchanged() -> None:
    config = _config()
    before = {key: value for key, value in config.to_dict().items() if key != "gradient_checkpointing"}
    for key in ("precision", "compile", "train_seed", "lm_eval", "lm_eval_include", "lm_eval_limit", "fsdp", "backend",
                "tensor_parallel"):
        before.pop(key)  # the earlier later-added fields, at their defaults
    digest = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert config.digest() == digest
    assert _config(gradient_checkpointing="on").digest() != digest


def test_a_samsum_run_trains_the_same_with_and_without(bench: Any, tiny_model: Callable[[str], Path],
                                                       data_dir: Path, tmp_path: Path) -> None:
    """Through `bench run`: auto turns checkpointing on for samsum, and the training curve (every
    step's loss and validation loss) and the fine-tuned scores equal a run with it off."""
    from harness.store import Store

    runs = {}
    for setting in ("auto", "off"):
        results = tmp_path / setting
        code, _, err = bench("run", "samsum", "--models", str(tiny_model("gpt2")), "--data-dir", str(data_dir),
                             "--results", str(results), "--train-samples", "8", "--eval-samples", "4",
                             "--validation-samples", "4", "--max-length", "160", "--gradient-checkpointing", setting)
        assert code == 0, err
        (folder,) = (results / "runs").iterdir()
        store = Store.existing(str(results), read_only=True)
        runs[setting] = (store.stage(folder.name, "finetune").info, store.stage(folder.name, "finetuned").metrics,
                         [json.loads(line) for line in (folder / "finetune" / "curves.jsonl").read_text().splitlines()])
    (on_info, on_metrics, on_curve), (off_info, off_metrics, off_curve) = runs["auto"], runs["off"]
    assert on_info["gradient_checkpointing"] is True and off_info["gradient_checkpointing"] is False
    assert len(on_curve) == len(off_curve) >= 2
    for on_point, off_point in zip(on_curve, off_curve):
        assert on_point.keys() == off_point.keys()
        for key in on_point.keys() & {"loss", "val_loss"}:
            assert abs(on_point[key] - off_point[key]) <= 1e-5, (key, on_point, off_point)
    assert on_metrics == off_metrics
