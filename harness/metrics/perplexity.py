"""Token-weighted perplexity: exp(total NLL / total tokens), never a mean of per-example perplexities.

Averaging per-example perplexities (or per-example mean NLLs) weights a 3-token example like
a 3000-token one, and exp of a mean is not a mean of exps; both give numbers that do not match
the loss the model was trained on. NLLs are in nats (natural log), as torch's cross-entropy.
"""
from __future__ import annotations

import math
from collections.abc import Iterable


def perplexity_from_totals(pairs: Iterable[tuple[float, int]]) -> float:
    """Perplexity from (summed NLL over an example's tokens, that example's token count) pairs.

    Examples with zero tokens contribute nothing; inf when exp overflows.
    """
    total_nll = 0.0
    total_tokens = 0
    for i, (nll, tokens) in enumerate(pairs):
        _check(i, nll, tokens)
        total_nll += float(nll)
        total_tokens += int(tokens)
    return _exp_mean(total_nll, total_tokens)


def _check(i: int, nll: float, tokens: int) -> None:
    if int(tokens) != tokens or tokens < 0:
        raise ValueError(f"example {i}: token count must be a non-negative integer, got {tokens}")
    if not math.isfinite(nll) or nll < 0:
        raise ValueError(f"example {i}: NLL must be finite and >= 0, got {nll}")


def _exp_mean(total_nll: float, total_tokens: int) -> float:
    if total_tokens == 0:
        raise ValueError("perplexity needs at least one token")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf
