"""Fault injection for the crash-safety tests, off unless BENCH_FAULTS is set.

BENCH_FAULTS="kill@finetune-saved=1,oom@train-step=2" makes the process SIGKILL itself (a real
kill -9, landing exactly there: a kill timed from outside would be flaky), raise the device's
out-of-memory error, or (nan@train-step=N) turn that step's loss into NaN, when the named point is
reached with that value. Points (value):
<stage>-started (1) as a stage's work begins and <stage>-files (1) after its files are written but
before its row commits (stage names with ':' as '-': baseline-prompt, finetune, finetuned);
finetune-saved (training states saved so far); train-state-staged (the step of a training state
written beside its place, not yet renamed into it); train-step (the optimizer step about to run);
eval-batch (the eval batch size a stage is about to predict with);
judge-replies (judge replies cached so far); judge-batch (the batch size a local judge is about to
generate with); report-written (1, between the table files); model-card (1, a run's stages all
stored, its model card not yet written).
"""
from __future__ import annotations

import os
import signal
import threading

ENV = "BENCH_FAULTS"
RANK_ENV = "BENCH_FAULTS_RANK"  # under torchrun: only that rank's faults fire (unset: every rank's)


def reached(point: str, value: int) -> bool:
    """True when a `nan` fault fires here (the caller then poisons its loss); `kill` and `oom`
    act themselves."""
    spec = os.environ.get(ENV)
    if not spec or os.environ.get(RANK_ENV, os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        return False
    for fault in spec.split(","):
        action, _, where = fault.strip().partition("@")
        name, _, at = where.partition("=")
        if name != point or not at.isdigit() or int(at) != value:
            continue
        if action == "kill":
            # Sent to this thread, so it dies before its next instruction (a process-wide kill
            # may let it run on a little while the kernel tears down other threads).
            signal.pthread_kill(threading.get_ident(), signal.SIGKILL)
        if action == "oom":
            import torch

            raise torch.OutOfMemoryError(f"injected out-of-memory at {point}={value} ({ENV})")
        if action == "nan":
            return True
    return False
