"""Retries with exponential backoff and full jitter, honouring the server's Retry-After."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from harness.judging.backend import TransientJudgeError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6          # calls per request before giving up (the first one included)
    base_seconds: float = 1.0  # first backoff; doubles each retry
    cap_seconds: float = 60.0  # longest backoff
    max_retry_after: float = 300.0  # a Retry-After longer than this is cut to it: never hang

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Full jitter (uniform in [0, backoff]) spreads workers that failed together; a
        Retry-After is a floor, since the server knows when it will take us again."""
        backoff = rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** retry))
        if retry_after is not None:
            return max(backoff, min(retry_after, self.max_retry_after))
        return backoff


class GaveUp(Exception):
    """Every attempt failed transiently; the message says how often and the last error."""


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, *, seed: int = 0,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[T, int]:
    """(result, calls made). Raises GaveUp after `policy.attempts` transient failures; any other
    exception (a bad key, an unknown model) passes straight through: retrying cannot fix it.
    `call` is a masked backend call (`backend.ask`), so the errors GaveUp quotes carry no key."""
    rng = random.Random(seed)
    for attempt in range(policy.attempts):
        try:
            return call(), attempt + 1
        except TransientJudgeError as exc:
            if attempt + 1 == policy.attempts:
                raise GaveUp(f"gave up after {policy.attempts} attempts: {exc}") from None
            sleep(policy.delay(attempt, exc.retry_after, rng))
    raise AssertionError("unreachable")
