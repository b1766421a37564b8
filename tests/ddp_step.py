"""One optimizer step of bench's training loop, on one process or under torchrun, the weights saved.

    python tests/ddp_step.py MODEL OUT                                  # one process
    python -m torch.distributed.run --nproc-per-node 2 tests/ddp_step.py MODEL OUT

For each method (full, lora, freeze:1, head) the tiny encoder MODEL (dropout off: the masks would
differ with the batch's split) trains one step of two accumulated batches of 8 and 1 examples (the
second leaves rank 1 an empty slice) with clipping on, and rank 0 writes the trained weights to
OUT/<method>.safetensors; under torchrun full fine-tuning also runs sharded by FSDP2 (OUT/fsdp.safetensors,
the full weights gathered from the shards). test_distributed.py compares the two runs' files.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(model_dir: str, out: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification

    from harness.distributed import join, leave
    from harness.options import RunConfig
    from harness.train.data_parallel import full_weights
    from harness.train.loop import train
    from harness.train.methods import apply_method
    from harness.types import TrainItem

    launcher = join()
    generator = torch.Generator().manual_seed(0)
    items = [TrainItem(input_ids=[2, *torch.randint(5, 200, (int(length),), generator=generator).tolist(), 3],
                       label=index % 2) for index, length in enumerate(torch.randint(4, 20, (9,), generator=generator))]
    runs = [("full", False), ("lora", False), ("freeze:1", False), ("head", False)]
    for method, fsdp in runs + ([("full", True)] if launcher.distributed else []):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
        config = RunConfig(task="t", model="m", method=method, objective="head", batch_size=8, grad_accum=2, lr=1e-2,
                           max_grad_norm=0.5, lora_dropout=0.0, evals_per_epoch=1, warmup_ratio=0.0,
                           schedule="constant", fsdp=fsdp)
        model = apply_method(model, config, "SEQ_CLS")
        result = train(model, items, config, 0, lambda _: {"loss": 0.0}, lambda _: None, launcher=launcher)
        assert result.steps == 1, result.steps
        if fsdp:  # gathered from the shards, as the fine-tune stage does
            model = full_weights(model, lambda: AutoModelForSequenceClassification.from_pretrained(
                model_dir, num_labels=2), launcher)
        if launcher.is_main:
            Path(out).mkdir(parents=True, exist_ok=True)
            weights = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
            save_file(weights, f"{out}/{'fsdp' if fsdp else method.replace(':', '')}.safetensors",
                      metadata={"loss": repr(result.curves[0]["loss"]), "tokens": str(result.train_tokens)})
        launcher.barrier()
    leave()


if __name__ == "__main__":
    main(*sys.argv[1:3])
