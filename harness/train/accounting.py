"""What a fine-tune did and what it cost: steps, tokens, time split into training and validation,
and FLOPs / MFU by the 6N-per-token rule.

The split matters for throughput: tokens/s counts forward, backward and optimizer steps alone;
validation, keeping the best weights and saving the training state are timed apart.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

# Dense bf16 tensor-core peaks (FLOP/s) of common training GPUs, for MFU; others report no MFU.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12,
                 "RTX 4090": 165e12}


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


class TrainClock:
    """Splits wall time between training and validation into a TrainResult: `pause()` when a
    validation starts (the time since the last `start()` was training), `start()` when training
    resumes (the time since `pause()` was validation)."""

    def __init__(self, result: TrainResult) -> None:
        self.result = result
        self.started = self.paused = time.perf_counter()

    def start(self) -> None:
        self.result.validation_seconds += time.perf_counter() - self.paused
        self.started = time.perf_counter()

    def pause(self) -> None:
        self.result.train_seconds += time.perf_counter() - self.started
        self.paused = time.perf_counter()


def flops_accounting(parameters: float, train_tokens: int, seconds: float) -> dict[str, Any]:
    """Training FLOPs by the 6N-per-token rule (2N forward + 4N backward; an overestimate for
    LoRA, whose frozen weights get no weight gradients), achieved FLOP/s, and on a known GPU the
    model FLOPs utilisation against its dense bf16 peak."""
    import torch

    flops = 6.0 * parameters * train_tokens
    achieved = flops / seconds if seconds else 0.0
    found: dict[str, Any] = {"train_flops": flops, "train_tflops_per_s": round(achieved / 1e12, 4)}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        peak = next((value for key, value in GPU_PEAK_BF16.items() if key in name), None)
        found.update(gpu=name, mfu=round(achieved / peak, 4) if peak else None)
    return found
