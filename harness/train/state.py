"""Mid-training checkpoints, so a killed fine-tune resumes from its last evaluation instead of
step 0, and ends exactly where an uninterrupted run would (same seed, same data order).

Saved at every validation: trainable weights, the best weights so far, optimizer and scheduler
state, the torch RNG, and where the loop stood (epoch, batches done, the numpy RNG state at the
epoch's start, so its batch order can be rebuilt and the done batches skipped). Tensors go to
safetensors (no pickle anywhere), the rest to JSON; the folder is written beside its final place
and renamed, so a kill while saving leaves the previous state whole.

Under FSDP2 each rank holds a shard of every weight and of its optimizer state (DTensors): the
state is gathered whole for the one writer (rank 0) and split again on load, so the saved folder
is the same as a single process's, and a run resumes on any number of ranks, sharded or not.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.artefacts import DamagedFile, check_safetensors_file, read_json, writing
from harness.faults import reached

STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"


@dataclass
class LoopState:
    step: int
    epoch: int
    batches_done: int   # batches of `epoch` already trained on
    micro: int
    epoch_rng: dict[str, Any]  # numpy bit-generator state when `epoch` began
    evals_without_gain: int
    result: dict[str, Any]     # TrainResult fields


@dataclass
class Position:
    """Where the loop stands in memory. `save` writes it (with the data order) as a LoopState."""

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
    saves: int = 0  # states saved by this process

    def add_batch(self, loss: float) -> None:
        self.window_loss, self.window_batches, self.micro = (self.window_loss + loss, self.window_batches + 1,
                                                             self.micro + 1)

    def end_window(self) -> float:
        """The optimizer step is taken: its mean batch loss, and a new window begins."""
        mean = self.window_loss / self.window_batches
        self.window_loss, self.window_batches = 0.0, 0
        return mean

    def restart_window(self) -> None:
        """The window's gradient was dropped (out of memory): its batches count as not trained on."""
        self.micro -= self.window_batches
        self.window_loss, self.window_batches = 0.0, 0


def resume(folder: Path, model: Any, optimizer: Any, scheduler: Any, position: Position,
           rng: np.random.Generator) -> dict[str, Any] | None:
    """Load the state saved in `folder` into the model, optimizer, scheduler, `position` and the
    data-order `rng` (as it stood when the saved epoch began); returns the saved TrainResult
    fields, or None when there is nothing to resume from."""
    resumed = load_state(folder, model, optimizer, scheduler)
    if resumed is None:
        return None
    saved, position.best_state = resumed
    position.step, position.micro, position.epoch, position.skip = (saved.step, saved.micro, saved.epoch,
                                                                    saved.batches_done)
    position.evals_without_gain, position.saved_step = saved.evals_without_gain, saved.step
    rng.bit_generator.state = saved.epoch_rng
    return saved.result


def save(folder: Path, model: Any, optimizer: Any, scheduler: Any, position: Position, batches_done: int,
         epoch_rng: dict[str, Any], result: Any, *, write: bool = True) -> None:
    """Save the loop's full state after `batches_done` batches of the current epoch; `result`: the
    TrainResult so far. Every rank calls it (FSDP2 shards are gathered collectively); only the one
    with `write` writes."""
    save_state(folder, model, optimizer, scheduler, position.best_state,
               LoopState(position.step, position.epoch, batches_done, position.micro, epoch_rng,
                         position.evals_without_gain, dict(result.__dict__)), write=write)
    position.saves, position.saved_step = position.saves + 1, position.step
    reached("finetune-saved", position.saves)


def save_state(folder: Path, model: Any, optimizer: Any, scheduler: Any, best_state: dict[str, Any] | None,
               loop: LoopState, *, write: bool = True) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    for name, param in model.named_parameters():
        if param.requires_grad:
            tensors[f"param.{name}"] = _whole(param, write)
    for name, value in (best_state or {}).items():
        tensors[f"best.{name}"] = _whole(value, write)
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = _whole(value, write)
            else:
                scalars.setdefault(str(index), {})[key] = value
    if not write:  # this rank's shards went into the writer's whole tensors
        return
    meta = {"loop": loop.__dict__, "optimizer_groups": optim["param_groups"], "optimizer_scalars": scalars,
            "optimizer_indices": [int(i) for i in optim["state"]], "scheduler": scheduler.state_dict(),
            "has_best": best_state is not None}
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with writing(staging):  # a full disk: one error line (safetensors says it as a SafetensorError)
            staging.mkdir(parents=True)
            save_file(tensors, str(staging / TENSORS_FILE))
            (staging / STATE_FILE).write_text(json.dumps(meta, default=_plain))
    except Exception:  # a full disk: no half state left taking the space (the previous state stays whole)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    reached("train-state-staged", loop.step)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, model: Any, optimizer: Any, scheduler: Any
               ) -> tuple[LoopState, dict[str, Any] | None] | None:
    """Restore weights, optimizer, scheduler and torch RNG in place; None when there is no state.
    A state left half-renamed by a kill (only `.old` present) is taken from `.old`."""
    import torch
    from safetensors.torch import load_file

    if not (folder / STATE_FILE).is_file():
        old = folder.with_name(folder.name + ".old")
        if not (old / STATE_FILE).is_file():
            return None
        folder = old
    fix = f"delete {folder} to fine-tune from the start, then re-run the same command"
    meta = read_json(folder / STATE_FILE, fix)
    if not (folder / TENSORS_FILE).is_file():
        raise DamagedFile(str(folder), f"no {TENSORS_FILE}", fix)
    check_safetensors_file(folder / TENSORS_FILE, fix)
    tensors = load_file(str(folder / TENSORS_FILE))
    params = dict(model.named_parameters())
    best: dict[str, Any] = {}
    with torch.no_grad():
        for key, value in tensors.items():
            kind, _, name = key.partition(".")
            if kind == "param":
                params[name].copy_(_placed(value, params[name]))
            elif kind == "best":
                best[name] = _placed(value, params[name])
    state: dict[int, dict[str, Any]] = {i: dict(meta["optimizer_scalars"].get(str(i), {}))
                                        for i in meta["optimizer_indices"]}
    indexed = [param for group in optimizer.param_groups for param in group["params"]]  # state_dict's numbering
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            param = indexed[int(index)]
            # Moments have their weight's shape and are sharded like it; a scalar step count is not.
            state[int(index)][name] = _placed(value, param) if value.shape == param.shape else value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    return LoopState(**meta["loop"]), (best if meta["has_best"] else None)


def _whole(value: Any, keep: bool) -> Any:
    """A tensor as saved: whole and on the CPU (None where `keep` is false). A DTensor (an FSDP2
    shard) is gathered from every rank first: a collective, so every rank calls this for the same
    tensors in the same order, and only the writer keeps the result."""
    if _sharded(value):
        value = value.full_tensor()
    return value.detach().cpu().contiguous().clone() if keep else None


def _placed(value: Any, like: Any) -> Any:
    """A saved whole tensor made like `like`: on its device, and split into this rank's shard when
    `like` is a DTensor (every rank read the whole tensor, so no rank sends any)."""
    if not _sharded(like):
        return value.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def _sharded(value: Any) -> bool:
    return type(value).__name__ == "DTensor"  # not imported: torch.distributed is absent from some builds


def _plain(value: Any) -> Any:
    """JSON for what optimizer/scheduler state holds besides numbers: tuples are lists already."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a training state")
