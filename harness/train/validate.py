"""Validation during training: the loss over held-out items (text tasks validate on it, since
generating for every validation example at every evaluation would cost more than the training
itself on a CPU), the clock that says when to validate, and the bookkeeping of the best
validation: early stopping and the best weights, restored at the end.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from harness.backends.batching import batch_loss, collate
from harness.backends.precision import autocast
from harness.progress import progress
from harness.train.accounting import TrainResult
from harness.train.state import Position
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


def record_validation(model: Any, scores: dict[str, float], criterion: str, result: TrainResult,
                      position: Position, patience: int | None, total_steps: int, log: Callable[[str], None]) -> None:
    """Log a validation, keep the weights if it is the best so far (lower is better for "loss",
    higher for any other criterion), and stop early after `patience` validations without gain."""
    result.curves.append({"step": position.step, **{f"val_{k}": v for k, v in scores.items()}})
    metric = scores[criterion]
    log(f"  step {position.step}/{total_steps}  loss {result.curves[-2]['loss']:.4f}  val {criterion} {metric:.4f}")
    best = result.best_metric
    if best is None or (metric < best if criterion == "loss" else metric > best):
        result.best_metric, result.best_step, position.evals_without_gain = metric, position.step, 0
        position.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return
    position.evals_without_gain += 1
    if patience is not None and position.evals_without_gain >= patience:
        result.stopped_early = True
        log(f"  early stop: no gain in {patience} evaluations")


def restore_note(result: TrainResult, criterion: str) -> str | None:
    """The line saying that the weights evaluated next are an earlier step's, not the last one's
    (which the log just showed); None when the last validation was the best."""
    key = f"val_{criterion}"
    validations = [point for point in result.curves if key in point]
    if not validations or result.best_metric is None or validations[-1]["step"] == result.best_step:
        return None
    last = validations[-1]
    return (f"  restoring the weights of step {result.best_step} (best val {criterion} {result.best_metric:.4f}; "
            f"last, step {last['step']}: {last[key]:.4f})")


def restore_best(model: Any, weights: dict[str, Any] | None) -> None:
    """Copy the best validation's trainable weights back into the model (None: nothing kept)."""
    import torch

    if weights is None:
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in weights:
                param.copy_(weights[name])
