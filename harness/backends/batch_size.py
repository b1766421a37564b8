"""Where the evaluation batch size starts: the requested size, capped by what a memory estimate
says fits. Out-of-memory back-off (halving, in stages.py) covers what the estimate misses, and the
size that ran is recorded with the stage.

The estimate is deliberately coarse and errs large: per example, every layer's key/value cache,
a few hidden-state-sized buffers and the MLP's intermediate activations over the full sequence,
the attention score matrix where attention is not fused, and the last position's fp32 logits.
"""
from __future__ import annotations

from typing import Any

from harness.backends.models import config_int
from harness.backends.precision import device_type

# Share of the free memory a batch may plan to use: the rest absorbs allocator fragmentation and
# whatever the estimate leaves out.
HEADROOM = 0.6


def bytes_per_example(config: Any, sequence: int, element_bytes: int) -> int:
    """Activation bytes one example of `sequence` tokens needs in a forward pass (no gradients)."""
    width = config_int(config, "hidden_size", "n_embd", "d_model", default=768)
    layers = config_int(config, "num_hidden_layers", "n_layer", "num_layers", default=12)
    heads = config_int(config, "num_attention_heads", "n_head", "num_heads", default=12)
    kv_heads = config_int(config, "num_key_value_heads", default=heads)
    inner = config_int(config, "intermediate_size", "n_inner", "d_ff", default=4 * width) or 4 * width
    vocab = config_int(config, "vocab_size", default=50_000)
    kv_width = width * kv_heads // max(1, heads)
    fused_attention = getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "flash_attention_2")
    per_token = layers * 2 * kv_width + 4 * width + 2 * inner
    scores = 0 if fused_attention else heads * sequence * sequence
    return (sequence * per_token + scores) * element_bytes + vocab * 4


def free_bytes(device: Any) -> int | None:
    """Memory a new allocation can take now: CUDA's free memory, else the OS's available memory."""
    import torch

    if device_type(device) == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def start_batch_size(model: Any, requested: int, sequence: int, device: Any, *,
                     available: int | None = None) -> int:
    """The requested batch, or the largest power of two under it that the estimate says fits."""
    available = free_bytes(device) if available is None else available
    if available is None:
        return requested
    # fp32 activations whatever the weights: bf16 autocast halves them, so this errs large.
    fits = int(available * HEADROOM) // max(1, bytes_per_example(model.config, sequence, 4))
    if fits >= requested:
        return requested
    size = 1
    while size * 2 <= fits:
        size *= 2
    return size
