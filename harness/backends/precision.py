"""Numeric precision of training and evaluation: `--precision auto|fp32|bf16`.

bf16 runs as autocast over fp32 weights (mixed precision): matrix products in bf16 on the tensor
cores, reductions and softmax in fp32, optimizer state and updates in fp32, so no loss scaling is
needed. `auto` picks bf16 on a GPU that has it and fp32 elsewhere: CPUs without a bf16 matrix path
run it 25-35x slower (measured on this project's 2-core build machine).
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager

from harness.errors import BenchError

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BenchError(f"unknown --precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")


def resolved_precision(precision: str, device: Any) -> str:
    """`auto` made concrete for this device: bf16 on a CUDA device that supports it, else fp32."""
    check_precision(precision)
    if precision != "auto":
        return precision
    import torch

    return "bf16" if device_type(device) == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(precision: str, device: Any) -> ContextManager[Any]:
    """The context the forward passes run in: bf16 autocast, or nothing for fp32."""
    if resolved_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device_type(device), dtype=torch.bfloat16)


def device_type(device: Any) -> str:
    """"cuda" / "cpu" from a torch.device or a plain string."""
    return getattr(device, "type", str(device))


def device() -> Any:
    """The device bench loads models onto: the GPU when there is one, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
