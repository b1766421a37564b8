"""Full fine-tuning with bench's training loop and its mid-training state, sharded by FSDP2 or not.

    python -m torch.distributed.run --nproc-per-node 2 tests/fsdp_resume.py MODEL OUT fsdp   # sharded
    python tests/fsdp_resume.py MODEL OUT plain                                              # one process

The tiny encoder MODEL (dropout off) trains 6 steps (batch 8 of 24 examples, 2 epochs, validated
on the loss of 8 of them 3 times per epoch, a training state saved at each), resuming from OUT/state if a
state is there; rank 0 writes the final weights (the best validation's, gathered from the shards)
to OUT/weights.safetensors. test_distributed.py kills a sharded run after a saved state and checks
that resuming it, sharded or in one process, ends on the uninterrupted run's weights.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(model_dir: str, out: str, mode: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification

    from harness.distributed import join, leave
    from harness.options import RunConfig
    from harness.train.data_parallel import full_weights
    from harness.train.loop import train
    from harness.train.methods import apply_method
    from harness.train.validate import validation_loss
    from harness.types import TrainItem

    launcher = join()
    generator = torch.Generator().manual_seed(0)
    # The label is written in the text (token 7 or 8 first), so the model learns it within a few steps.
    items = [TrainItem(input_ids=[2, 7 + index % 2, *torch.randint(9, 200, (int(length),), generator=generator).tolist(),
                                  3], label=index % 2)
             for index, length in enumerate(torch.randint(4, 20, (24,), generator=generator))]
    held_out = items[:8]  # seen in training: its loss falls at every step, so the last step's weights are the best

    def load() -> object:
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)

    fsdp = mode == "fsdp"
    config = RunConfig(task="t", model="m", method="full", objective="head", batch_size=8, lr=5e-3, epochs=2.0,
                       evals_per_epoch=3, warmup_ratio=0.0, schedule="linear", fsdp=fsdp)
    model = apply_method(load(), config, "SEQ_CLS")
    result = train(model, items, config, 0, lambda current: {"loss": validation_loss(current, held_out, 0, 4)},
                   print, state_dir=Path(out) / "state", launcher=launcher)
    assert result.steps == 6, result.steps
    if fsdp:
        model = full_weights(model, load, launcher)
    if launcher.is_main:
        weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        save_file(weights, f"{out}/weights.safetensors")
    launcher.barrier()
    leave()


if __name__ == "__main__":
    main(*sys.argv[1:4])
