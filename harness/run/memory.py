"""Peak memory of one stage: CUDA's allocator peak on a GPU, else resident memory sampled on CPU.

The process-wide `ru_maxrss` never goes down, so after a 135M model every later stage (say a
22M encoder in the same command) would report the big model's peak; sampling RSS during the
stage measures the stage itself.
"""
from __future__ import annotations

import os
import threading
from types import TracebackType


class PeakMemory:
    """`with PeakMemory() as peak: ...` then `peak.mb`."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = False

    def __enter__(self) -> "PeakMemory":
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self.mb = _rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.mb = max(self.mb, _rss_mb())

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._cuda:
            import torch

            self.mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.mb = max(self.mb, _rss_mb())
        self.mb = round(self.mb, 1)


def _rss_mb() -> float:
    """Resident set size from /proc (Linux); elsewhere the process peak is the best available."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
