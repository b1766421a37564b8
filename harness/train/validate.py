"""Held-out loss of training items, the validation of kinds that validate on loss (text tasks):
generating for every validation example at every evaluation would cost more than the training."""
from __future__ import annotations

from typing import Any, Sequence

from harness.backends.batching import batch_loss, collate
from harness.backends.precision import autocast
from harness.progress import progress
from harness.types import TrainItem


def validation_loss(model: Any, items: Sequence[TrainItem], pad_id: int, batch_size: int,
                    precision: str = "fp32") -> float:
    """Mean loss over validation items: per target token for LM items (the model's loss is a mean
    over a batch's target tokens, so each batch counts by its tokens and the value does not depend
    on --eval-batch-size), per example for span items (one start/end loss each)."""
    import torch

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
