"""The training loop, readable in one screen: length-grouped batches with dynamic padding,
AdamW/SGD, warmup then linear/cosine/constant schedule, gradient accumulation and clipping,
periodic validation with early stopping, best weights restored at the end.

Arithmetic worth knowing: tokens per optimizer step = batch_size x grad_accum x mean length
(real tokens, not padding: padding is never computed beyond the longest row of a batch).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.backends.batching import batch_loss, collate
from harness.options import RunConfig
from harness.errors import BenchError
from harness.types import TrainItem
from harness.backends.precision import autocast, resolved_precision
from harness.progress import progress, scope


@dataclass
class TrainResult:
    steps: int = 0
    epochs: float = 0.0
    train_tokens: int = 0
    train_seconds: float = 0.0  # forward, backward and optimizer steps only
    validation_seconds: float = 0.0  # validation, keeping the best weights, saving the training state
    best_step: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    curves: list[dict[str, Any]] = field(default_factory=list)
    oom_chunks: int = 1  # >1: the device ran out of memory and each batch ran in this many pieces

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle, sort within windows of 50 batches by length, then shuffle the batch order:
    batches pad little yet the data order stays random."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [list(map(int, chunk[i:i + batch_size])) for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_optimizer(model: Any, config: RunConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            # Biases and norm weights are not decayed (standard BERT/GPT practice).
            (no_decay if param.ndim < 2 else decay).append(param)
    if not decay and not no_decay:
        raise BenchError("no trainable parameters: check --method")
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        # The fused CUDA kernel updates all tensors in one launch instead of a dozen per parameter.
        on_cuda = all(param.is_cuda for group in groups for param in group["params"])
        return torch.optim.AdamW(groups, lr=config.lr, fused=on_cuda or None)
    momentum = 0.9 if config.optimizer == "sgd-momentum" else 0.0
    return torch.optim.SGD(groups, lr=config.lr, momentum=momentum)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then linear / cosine decay to 0, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - progress) if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class _Loop:
    """Where the loop stands. A mid-training checkpoint saves these with the data order."""

    step: int = 0  # optimizer steps done
    micro: int = 0  # batches trained on (an optimizer step every grad_accum of them, or at an epoch's end)
    epoch: int = 0
    skip: int = 0  # batches of this epoch trained on before a resume
    evals_without_gain: int = 0
    best_state: dict[str, Any] | None = None  # trainable weights at the best validation
    chunks: int = 1  # each batch runs in this many pieces; doubled when the device runs out of memory
    window_loss: float = 0.0  # summed over the current optimizer step's batches
    window_batches: int = 0
    saved_step: int = 0  # step of the last saved training state (0: none)


def train(model: Any, items: Sequence[TrainItem], config: RunConfig, pad_id: int,
          validate: Callable[[Any], dict[str, float]], log: Callable[[str], None] = print,
          state_dir: Path | None = None, *, criterion: str = "loss") -> TrainResult:
    """Train in place; the model ends holding the weights with the best `criterion` among the
    scores `validate` returns (lower is better for "loss"). With `state_dir`, the loop saves its
    full state at every validation and, if a state is there, resumes from it."""
    import torch

    from harness.faults import reached
    from harness.train.state import LoopState, load_state, save_state

    if not items:  # the step loop below would wait forever for a first batch
        raise BenchError("no training examples to fine-tune on: raise --train-samples, or check that the "
                         "training texts are not empty")
    torch.manual_seed(config.training_seed)
    rng = np.random.default_rng(config.training_seed)
    device = next(model.parameters()).device
    lengths = [len(item.input_ids) for item in items]
    batches_per_epoch = math.ceil(len(items) / config.batch_size)
    # An epoch's last step may gather fewer than grad_accum batches: epochs never spill into each other.
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    warmup = int(config.warmup_ratio * total_steps)
    eval_every = max(1, math.ceil(total_steps / max(1, round(config.epochs * config.evals_per_epoch))))
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, config.schedule))
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Compiled forward shares the model's parameters; state, validation and saving use `model`.
    forward = torch.compile(model, dynamic=True) if config.compile else model
    precision = resolved_precision(config.precision, device)  # `auto` settled once, not per batch
    result, loop = TrainResult(), _Loop()
    resumed = load_state(state_dir, model, optimizer, scheduler) if state_dir else None
    if resumed is not None:
        saved, loop.best_state = resumed
        loop.step, loop.micro, loop.epoch, loop.skip = saved.step, saved.micro, saved.epoch, saved.batches_done
        loop.evals_without_gain, loop.saved_step = saved.evals_without_gain, saved.step
        result = TrainResult(**saved.result)
        rng.bit_generator.state = saved.epoch_rng
        log(f"  resuming fine-tuning from its checkpoint at step {loop.step}/{total_steps}")
    with progress("train", total=total_steps, unit="steps") as bar:
        bar.skip(loop.step)  # resumed: those steps were trained before, and count towards no rate
        saves, step_tokens = 0, result.train_tokens
        started = time.perf_counter()
        model.train()
        while loop.step < total_steps and not result.stopped_early:
            epoch_rng = rng.bit_generator.state
            batches = length_grouped_batches(lengths, config.batch_size, rng)
            for done, batch_ids in enumerate(batches):
                if done < loop.skip:  # trained on before the interruption
                    continue
                loss, tokens = _run_batch(forward, [items[i] for i in batch_ids], loop, optimizer, config, pad_id,
                                          device, precision, log)
                if not math.isfinite(loss):
                    kept = (f"; the last good training state (step {loop.saved_step}) is kept in {state_dir}"
                            if loop.saved_step else "")
                    raise BenchError(f"training loss became {loss} at step {loop.step}{kept}; lower --lr (now "
                                     f"{config.lr}) or --max-grad-norm and run again")
                result.train_tokens += tokens
                loop.window_loss, loop.window_batches, loop.micro = (loop.window_loss + loss, loop.window_batches + 1,
                                                                     loop.micro + 1)
                if loop.window_batches < config.grad_accum and done + 1 < len(batches):
                    continue
                if loop.window_batches < config.grad_accum:  # the epoch's short last step: average over its batches
                    for param in trainable:
                        if param.grad is not None:
                            param.grad.mul_(config.grad_accum / loop.window_batches)
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                used_lr = scheduler.get_last_lr()[0]  # the rate this update applies (step() moves to the next)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loop.step += 1
                result.curves.append({"step": loop.step, "loss": loop.window_loss / loop.window_batches, "lr": used_lr})
                bar.advance(1, counted={"tok": result.train_tokens - step_tokens}, loss=result.curves[-1]["loss"],
                            lr=used_lr)
                step_tokens = result.train_tokens
                loop.window_loss, loop.window_batches = 0.0, 0
                if loop.step % eval_every == 0 or loop.step == total_steps:
                    result.train_seconds += time.perf_counter() - started
                    paused = time.perf_counter()
                    with scope("validate", transient=True):  # its result is the logged line below
                        scores = validate(model)
                    _check_healthy(scores, trainable, loop, config)
                    model.train()
                    _record_validation(model, scores, criterion, result, loop, config.patience, total_steps, log)
                    bar.set(**{f"val_{criterion}": scores[criterion]})
                    if not result.stopped_early and state_dir is not None and loop.step < total_steps:
                        save_state(state_dir, model, optimizer, scheduler, loop.best_state,
                                   LoopState(loop.step, loop.epoch, done + 1, loop.micro, epoch_rng,
                                             loop.evals_without_gain, dict(result.__dict__)))
                        saves, loop.saved_step = saves + 1, loop.step
                        reached("finetune-saved", saves)
                    # Training time resumes here: validation, the best-weights copy and the state save
                    # are counted apart, so tokens/s measures forward, backward and optimizer steps alone.
                    result.validation_seconds += time.perf_counter() - paused
                    started = time.perf_counter()
                    if result.stopped_early:
                        break
                if loop.step >= total_steps:
                    break
            loop.epoch, loop.skip = loop.epoch + 1, 0
    result.steps, result.epochs = loop.step, loop.micro / batches_per_epoch
    result.oom_chunks = loop.chunks
    note = restore_note(result, criterion)
    if note and loop.best_state is not None:
        log(note)
    _restore(model, loop.best_state)
    model.eval()
    return result


def _run_batch(forward: Any, batch: Sequence[TrainItem], loop: _Loop, optimizer: Any, config: RunConfig,
               pad_id: int, device: Any, precision: str, log: Callable[[str], None]) -> tuple[float, int]:
    """Forward and backward of one batch: (loss, real tokens). Out of device memory, the batch is
    retried in twice as many pieces (the same effective batch), down to one example per piece."""
    import torch

    from harness.faults import reached

    while True:
        try:
            poisoned = loop.chunks == 1 and reached("train-step", loop.step)
            loss, tokens = _forward_backward(forward, batch, loop.chunks, config.grad_accum, pad_id, device,
                                             precision)
            return (math.nan if poisoned else loss), tokens
        except torch.OutOfMemoryError:
            if loop.chunks >= len(batch):
                raise BenchError(f"out of memory even at 1 example per forward pass (step {loop.step}); lower "
                                 "--max-length or use --method lora/qlora") from None
            # Drop the failed attempt's partial gradient; batches already accumulated for this step
            # go with it (the step restarts its accumulation window), once per back-off.
            optimizer.zero_grad(set_to_none=True)
            loop.micro -= loop.window_batches
            loop.window_loss, loop.window_batches = 0.0, 0
            loop.chunks *= 2
            _free_cache(device)
            log(f"  out of memory: batch now runs as {loop.chunks} pieces of ~{math.ceil(len(batch) / loop.chunks)} "
                "examples (same effective batch)")


def _check_healthy(scores: dict[str, float], trainable: Sequence[Any], loop: _Loop, config: RunConfig) -> None:
    """An update can break the model while the loss that led to it was finite: such weights must
    not become a "last good" training state."""
    import torch

    if all(math.isfinite(v) for v in scores.values()) and all(bool(torch.isfinite(p).all()) for p in trainable):
        return
    kept = f"; the last good training state (step {loop.saved_step}) is kept" if loop.saved_step else ""
    raise BenchError(f"the model's weights or outputs became inf/nan by step {loop.step} (the training loss was "
                     f"still finite){kept}; lower --lr (now {config.lr}) or --max-grad-norm and run again")


def _record_validation(model: Any, scores: dict[str, float], criterion: str, result: TrainResult, loop: _Loop,
                       patience: int | None, total_steps: int, log: Callable[[str], None]) -> None:
    """Log a validation, keep the weights if it is the best so far, and stop early after
    `patience` validations without gain."""
    result.curves.append({"step": loop.step, **{f"val_{k}": v for k, v in scores.items()}})
    metric = scores[criterion]
    log(f"  step {loop.step}/{total_steps}  loss {result.curves[-2]['loss']:.4f}  val {criterion} {metric:.4f}")
    best = result.best_metric
    if best is None or (metric < best if criterion == "loss" else metric > best):
        result.best_metric, result.best_step, loop.evals_without_gain = metric, loop.step, 0
        loop.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return
    loop.evals_without_gain += 1
    if patience is not None and loop.evals_without_gain >= patience:
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


def _restore(model: Any, weights: dict[str, Any] | None) -> None:
    import torch

    if weights is None:
        return
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in weights:
                param.copy_(weights[name])


def _forward_backward(model: Any, batch: Sequence[TrainItem], chunks: int, grad_accum: int, pad_id: int,
                      device: Any, precision: str = "fp32") -> tuple[float, int]:
    """Loss of the batch (a float) and its real tokens, gradients accumulated. In `chunks` pieces
    the per-piece losses are weighted by piece size, so the gradient is the whole batch's (up to the
    per-token averaging of LM losses inside each piece)."""
    size = math.ceil(len(batch) / chunks)
    total, tokens = 0.0, 0
    for start in range(0, len(batch), size):
        piece = batch[start:start + size]
        inputs = collate(piece, pad_id, device)
        with autocast(precision, device):  # the forward only: backward follows the forward's dtypes
            loss = batch_loss(model, inputs, lm_targets=piece[0].lm_labels is not None)
        share = len(piece) / len(batch)
        if not bool(loss.isfinite()):
            return float(loss.item()), tokens
        (loss * share / grad_accum).backward()
        total += loss.item() * share
        tokens += int(inputs["attention_mask"].sum())
    return total, tokens


def _free_cache(device: Any) -> None:
    import torch

    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()
