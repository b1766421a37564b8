"""Token sequences -> length-sorted batches -> padded tensors, and a causal or seq2seq model's loss
on them. Shared by the training loop and the Hugging Face backend's scoring, generation and span
extraction, so none of them imports another."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from harness.backends.target_logits import lm_loss
from harness.types import TrainItem


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped longest-first, so each batch pads to similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, left: bool, device: Any = None) -> tuple[Any, Any]:
    """Token ids and attention mask of one batch, padded to its longest row. Left padding puts every
    prompt's last token in the last column (causal scoring and generation); right padding suits
    encoders and teacher-forced windows."""
    import torch

    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return (ids.to(device), mask.to(device)) if device is not None else (ids, mask)


def collate(items: Sequence[TrainItem], pad_id: int, device: Any) -> dict[str, Any]:
    import torch

    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
        mask[row, : len(item.input_ids)] = 1
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if items[0].token_type_ids is not None:
        types = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            types[row, : len(item.token_type_ids)] = torch.tensor(item.token_type_ids)  # type: ignore[arg-type]
        batch["token_type_ids"] = types.to(device)
    if items[0].span is not None:
        batch["start_positions"] = torch.tensor([item.span[0] for item in items], device=device)  # type: ignore[index]
        batch["end_positions"] = torch.tensor([item.span[1] for item in items], device=device)  # type: ignore[index]
        return batch
    if items[0].lm_labels is not None:
        # Causal LM targets align with the input; seq2seq targets are their own (shorter) sequence.
        label_width = max(len(item.lm_labels or ()) for item in items)
        labels = torch.full((len(items), label_width), -100, dtype=torch.long)
        for row, item in enumerate(items):
            labels[row, : len(item.lm_labels)] = torch.tensor(item.lm_labels)  # type: ignore[arg-type]
        batch["labels"] = labels.to(device)
    else:
        batch["labels"] = torch.tensor([item.label for item in items], device=device)
    return batch


def batch_loss(model: Any, inputs: dict[str, Any], *, lm_targets: bool) -> Any:
    """The model's loss on a collated batch. LM targets take it from the target positions' logits
    alone (no [B, T, V] tensor); a compiled forward keeps the model's own loss, since the hook that
    picks the positions would be traced into (and recompile) the graph every batch."""
    if lm_targets and not hasattr(model, "_orig_mod"):  # _orig_mod: what torch.compile wraps
        return lm_loss(model, inputs)
    return model(**inputs).loss
