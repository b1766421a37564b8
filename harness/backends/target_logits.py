"""LM-head logits at the positions that carry a target, and nowhere else.

A causal LM's forward computes the LM head at every position: [B, T, V] logits (8 x 384 x 49,152
fp32 = 604 MB for a samsum batch on SmolLM2), then the loss keeps a full-vocabulary log-softmax of
them for the backward pass, although only the target tokens carry loss (a summary's ~10% of the
positions, one or two verbalizer tokens of a classification prompt). Here a forward pre-hook on
the model's output embedding hands the head only the hidden states of the selected positions,
so the [B, T, V] tensor never exists: the head and the log-softmax run over N target rows.

The hook sits on whatever module the model calls its output embedding, so it is the model's own
code that runs around it (T5's rescaling of the decoder output before the head, a final logit
soft-capping after it): the values equal those of the full forward at the same positions.
"""
from __future__ import annotations

from typing import Any


def replica_model(model: Any) -> Any:
    """The model inside a DDP wrapper (its config and heads; the forward still runs through the
    wrapper, which synchronises gradients); any other model itself."""
    return model.module if type(model).__name__ == "DistributedDataParallel" else model


def logits_at(model: Any, inputs: dict[str, Any], select: Any) -> Any:
    """[N, V] logits of the positions where the [B, T] bool `select` is True (row-major order)."""
    head = replica_model(model).get_output_embeddings()
    fired = False

    def keep_selected(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        nonlocal fired
        hidden = args[0]
        if hidden.shape[:2] != select.shape:  # a head called on other positions: leave it alone
            return args
        fired = True
        return (hidden[select].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(keep_selected) if head is not None else None
    try:
        logits = model(**inputs).logits
    finally:
        if handle is not None:
            handle.remove()
    # A model whose head is not its output-embedding module computed every position: pick them here.
    return logits[0] if fired else logits[select]


def target_positions(labels: Any, *, seq2seq: bool) -> tuple[Any, Any]:
    """(select, targets): the [B, T] positions whose logits predict a target, and the [N] target
    ids in the same order. A causal LM's position t predicts token t + 1; a seq2seq decoder's
    position t predicts labels[t] (the decoder input is the labels shifted right)."""
    import torch

    if seq2seq:
        select = labels != -100
        return select, labels[select]
    following = labels[:, 1:]
    select = torch.zeros_like(labels, dtype=torch.bool)
    select[:, :-1] = following != -100
    return select, following[following != -100]


def lm_loss(model: Any, inputs: dict[str, Any]) -> Any:
    """The model's own mean token cross-entropy for `inputs["labels"]` (-100 = no loss), computed
    from the target positions' logits only. Equal to `model(**inputs).loss` (fp32 upcast and
    ignore_index as transformers' causal-LM and seq2seq losses)."""
    import torch

    inner = replica_model(model)
    seq2seq = bool(getattr(inner.config, "is_encoder_decoder", False))
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    if seq2seq:  # what the model derives from `labels` when given them: given here instead
        inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
    select, targets = target_positions(labels, seq2seq=seq2seq)
    logits = logits_at(model, inputs, select)
    return torch.nn.functional.cross_entropy(logits.float(), targets)
