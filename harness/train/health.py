"""NaN/inf checks: a loss or weights that stop being finite end the fine-tune with one error line
that says which training state is still good, instead of training on (and saving) garbage."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from harness.errors import BenchError
from harness.options import RunConfig
from harness.train.state import Position


def check_loss(loss: float, position: Position, config: RunConfig, state_dir: Path | None) -> None:
    """A batch's training loss must be finite."""
    if math.isfinite(loss):
        return
    kept = (f"; the last good training state (step {position.saved_step}) is kept in {state_dir}"
            if position.saved_step else "")
    raise BenchError(f"training loss became {loss} at step {position.step}{kept}; lower --lr (now "
                     f"{config.lr}) or --max-grad-norm and run again")


def check_healthy(scores: dict[str, float], trainable: Sequence[Any], position: Position, config: RunConfig) -> None:
    """An update can break the model while the loss that led to it was finite: such weights must
    not become a "last good" training state."""
    import torch

    if all(math.isfinite(v) for v in scores.values()) and all(bool(torch.isfinite(p).all()) for p in trainable):
        return
    kept = f"; the last good training state (step {position.saved_step}) is kept" if position.saved_step else ""
    raise BenchError(f"the model's weights or outputs became inf/nan by step {position.step} (the training loss was "
                     f"still finite){kept}; lower --lr (now {config.lr}) or --max-grad-norm and run again")
