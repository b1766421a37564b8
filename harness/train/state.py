"""Mid-training checkpoints, so a killed fine-tune resumes from its last evaluation instead of
step 0, and ends exactly where an uninterrupted run would (same seed, same data order).

Saved at every validation: trainable weights, the best weights so far, optimizer and scheduler
state, the torch RNG, and where the loop stood (epoch, batches done, the numpy RNG state at the
epoch's start, so its batch order can be rebuilt and the done batches skipped). Tensors go to
safetensors (no pickle anywhere), the rest to JSON; the folder is written beside its final place
and renamed, so a kill while saving leaves the previous state whole.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def save_state(folder: Path, model: Any, optimizer: Any, scheduler: Any, best_state: dict[str, Any] | None,
               loop: LoopState) -> None:
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    for name, param in model.named_parameters():
        if param.requires_grad:
            tensors[f"param.{name}"] = param.detach().cpu().contiguous().clone()
    for name, value in (best_state or {}).items():
        tensors[f"best.{name}"] = value.detach().cpu().contiguous().clone()
    optim = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
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
                params[name].copy_(value.to(params[name].device))
            elif kind == "best":
                best[name] = value.to(params[name].device)
    state: dict[int, dict[str, Any]] = {i: dict(meta["optimizer_scalars"].get(str(i), {}))
                                        for i in meta["optimizer_indices"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state[int(index)][name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    return LoopState(**meta["loop"]), (best if meta["has_best"] else None)


def _plain(value: Any) -> Any:
    """JSON for what optimizer/scheduler state holds besides numbers: tuples are lists already."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a training state")
