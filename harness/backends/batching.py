"""Token sequences -> padded tensors, and a causal or seq2seq model's loss on them. Shared by the
training loop and the Hugging Face backend's target scoring, so neither imports the other."""
from __future__ import annotations

from typing import Any, Sequence

from harness.backends.target_logits import lm_loss
from harness.types import TrainItem


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
