"""The training loop, readable in one screen: length-grouped batches with dynamic padding,
AdamW/SGD, warmup then linear/cosine/constant schedule, gradient accumulation and clipping,
periodic validation with early stopping, best weights restored at the end.

Arithmetic worth knowing: tokens per optimizer step = batch_size x grad_accum x mean length
(real tokens, not padding: padding is never computed beyond the longest row of a batch). How the
loss is weighted over pieces and accumulated batches: see train/step.py.

Where each part lives: batches and step counts in batching.py, the optimizer, schedule and update
in optim.py, forward/backward and out-of-memory back-off in step.py, NaN/inf checks in health.py,
validation, early stopping and the best weights in validate.py, the resumable mid-training state in
state.py, time and FLOPs in accounting.py; DDP/FSDP wrapping and each rank's part of a batch in
data_parallel.py (the process group itself: harness/distributed.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.backends.precision import resolved_precision
from harness.errors import BenchError
from harness.options import RunConfig
from harness.progress import progress, scope
from harness.train.accounting import TrainClock, TrainResult
from harness.train.batching import StepPlan, length_grouped_batches
from harness.train.data_parallel import resharded, wrap
from harness.train.health import check_healthy, check_loss
from harness.distributed import SINGLE_PROCESS, Launcher
from harness.train.optim import make_optimizer, make_scheduler, optimizer_step
from harness.train.state import Position, resume, save
from harness.train.step import run_batch
from harness.train.validate import record_validation, restore_best, restore_note
from harness.types import TrainItem

__all__ = ["TrainResult", "train"]


def train(model: Any, items: Sequence[TrainItem], config: RunConfig, pad_id: int,
          validate: Callable[[Any], dict[str, float]], log: Callable[[str], None] = print,
          state_dir: Path | None = None, *, criterion: str = "loss",
          launcher: Launcher = SINGLE_PROCESS) -> TrainResult:
    """Train in place; the model ends holding the weights with the best `criterion` among the
    scores `validate` returns (lower is better for "loss"). With `state_dir`, the loop saves its
    full state at every validation and, if a state is there, resumes from it."""
    import torch

    _require_items(items)
    torch.manual_seed(config.training_seed)
    rng = np.random.default_rng(config.training_seed)  # the data order; resumed with the state
    device = next(model.parameters()).device
    plan = StepPlan.of(len(items), config)
    # Compiled/DDP forward shares `model`'s parameters (state, validation, saving use `model`); wrapped first: FSDP2
    forward = wrap(torch.compile(model, dynamic=True) if config.compile else model, launcher, fsdp=config.fsdp)
    optimizer = make_optimizer(model, config)  # shards the parameters in place, and the optimizer must see the shards
    scheduler = make_scheduler(optimizer, plan, config.schedule)
    trainable = [p for p in model.parameters() if p.requires_grad]
    precision = resolved_precision(config.precision, device)  # `auto` settled once, not per batch
    result, position = TrainResult(), Position()
    saved = resume(state_dir, model, optimizer, scheduler, position, rng) if state_dir else None
    if saved is not None:
        result = TrainResult(**saved)
        log(f"  resuming fine-tuning from its checkpoint at step {position.step}/{plan.total_steps}")
    with progress("train", total=plan.total_steps, unit="steps") as bar:
        bar.skip(position.step)  # resumed: those steps were trained before, and count towards no rate
        report, clock = StepReport(bar, result), TrainClock(result)
        model.train()
        while position.step < plan.total_steps and not result.stopped_early:
            epoch_rng = rng.bit_generator.state  # saved with the state: rebuilds this epoch's batch order
            batches = length_grouped_batches([len(item.input_ids) for item in items], config.batch_size, rng)
            for done, batch_ids in enumerate(batches):
                if done < position.skip:  # trained on before the interruption
                    continue
                ends_step = position.window_batches + 1 >= config.grad_accum or done + 1 == len(batches)
                loss, tokens = run_batch(forward, [items[i] for i in batch_ids], position, optimizer, config,
                                         pad_id, device, precision, log, launcher, sync=ends_step)
                check_loss(loss, position, config, state_dir)
                result.train_tokens += tokens
                position.add_batch(loss)
                if position.window_batches < config.grad_accum and done + 1 < len(batches):
                    continue  # gradients accumulate over --grad-accum batches (or to the epoch's end)
                used_lr = optimizer_step(optimizer, scheduler, trainable, position.window_batches, config)
                position.step += 1
                report.step(position.step, position.end_window(), used_lr)
                if plan.validates_at(position.step):
                    clock.pause()  # validation, the best-weights copy and the state save are not training time
                    scores = _validated(model, validate, trainable, position, config)
                    record_validation(model, scores, criterion, result, position, config.patience, plan.total_steps, log)
                    bar.set(**{f"val_{criterion}": scores[criterion]})
                    if state_dir and not result.stopped_early and position.step < plan.total_steps:
                        save(state_dir, model, optimizer, scheduler, position, done + 1, epoch_rng, result,
                             write=launcher.is_main)  # every rank: FSDP2 gathers its shards for rank 0
                    clock.start()
                if result.stopped_early or position.step >= plan.total_steps:
                    break
            position.epoch, position.skip = position.epoch + 1, 0
    return _finish(model, result, position, plan, criterion, log)


def _require_items(items: Sequence[TrainItem]) -> None:
    if not items:  # the step loop would wait forever for a first batch
        raise BenchError("no training examples to fine-tune on: raise --train-samples, or check that the "
                         "training texts are not empty")


class StepReport:
    """Progress reporting: each optimizer step's loss and rate go into the curves and the bar,
    with the tokens it trained on."""

    def __init__(self, bar: Any, result: TrainResult) -> None:
        self.bar, self.result, self.tokens = bar, result, result.train_tokens

    def step(self, step: int, loss: float, lr: float) -> None:
        self.result.curves.append({"step": step, "loss": loss, "lr": lr})
        self.bar.advance(1, counted={"tok": self.result.train_tokens - self.tokens}, loss=loss, lr=lr)
        self.tokens = self.result.train_tokens


def _validated(model: Any, validate: Callable[[Any], dict[str, float]], trainable: Sequence[Any],
               position: Position, config: RunConfig) -> dict[str, float]:
    """The validation scores of the current weights, checked finite; the model back in training mode."""
    with scope("validate", transient=True):  # its result is the logged line record_validation writes
        scores = validate(model)
    resharded(model)
    check_healthy(scores, trainable, position, config)
    model.train()
    return scores


def _finish(model: Any, result: TrainResult, position: Position, plan: StepPlan, criterion: str,
            log: Callable[[str], None]) -> TrainResult:
    """Count what was done, and hand back the model holding the best validation's weights."""
    result.steps, result.epochs = position.step, position.micro / plan.batches_per_epoch
    result.oom_chunks = position.chunks
    note = restore_note(result, criterion)
    if note and position.best_state is not None:
        log(note)
    restore_best(model, position.best_state)
    model.eval()
    return result
