"""Baselines evaluated once: runs that differ only in how they fine-tune share one baseline.

A sweep over LoRA rank x learning rate evaluates the same untrained model on the same examples
in every cell; with SmolLM2 on a CPU that is minutes per cell for identical numbers. A baseline
stage is fully determined by the model, the task and its options, the eval examples and their
gold, the few-shot demonstrations, the baseline kind and every setting that reaches evaluation;
those go into a key stored with the stage. A later run whose baseline has the same key copies
the stored stage (predictions re-scored as `bench rescore` would, so metrics are the same) into
its own record, noting where it came from. A copy, not a reference: every run stays a complete,
self-contained record, and deleting the first run (its folder or its rows) breaks no other. The
source is only ever a complete stage (a stage row is written last, in one transaction), so a
crash mid-baseline leaves nothing to share.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from harness.options import LATER_DEFAULTS, RunConfig
from harness.store import Store
from harness.types import Splits

# Settings that never reach a baseline stage: fine-tuning's, and the lm-eval tasks (stages of their
# own). Everything else in a RunConfig (model, task options, shots, seed, eval sample, lengths,
# batch size, precision, chat template...) keys the baseline.
OUTSIDE_BASELINE = frozenset({
    "method", "objective", "baselines", "preset", "train_samples", "validation_samples", "epochs", "lr",
    "batch_size", "grad_accum", "optimizer", "schedule", "warmup_ratio", "max_grad_norm", "weight_decay",
    "evals_per_epoch", "patience", "early_stop_metric", "train_seed", "lora_rank", "lora_alpha",
    "lora_dropout", "lora_targets", "compile", "gradient_checkpointing", "lm_eval", "lm_eval_include",
    "lm_eval_limit",
})
KEY_FIELD = "baseline_key"  # in a baseline stage's info


def baseline_key(config: RunConfig, baseline: str, splits: Splits, eval_gold: str) -> str:
    """What the baseline `baseline` of a run with `config` on `splits` depends on, hashed."""
    settings = {name: value for name, value in config.to_dict().items() if name not in OUTSIDE_BASELINE}
    for name in ("backend", "tensor_parallel"):  # added later: at their defaults a key stays what it was;
        if baseline == "head" or settings[name] == LATER_DEFAULTS[name]:  # a head baseline always runs on HF
            del settings[name]
    if baseline == "head":  # the untrained head is drawn with the training seed (fine-tuning's init)
        settings["head_seed"] = config.training_seed
    if baseline == "prompt" and config.shots:  # demonstrations are drawn from this pool
        settings["demo_pool"] = [example.id for example in splits.demos_from]
    material = {"baseline": baseline, "settings": settings, "eval_gold": eval_gold,
                "data": sorted(splits.source_hashes.values())}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shared_source(store: Store, run_id: str, stage: str, key: str) -> str | None:
    """Another run whose `stage` is complete with this key, if any (the oldest: the one first computed)."""
    return store.run_with_stage_info(stage, KEY_FIELD, key, other_than=run_id)


def copied_stage(store: Store, source: str, stage: str) -> tuple[list[Any], dict[str, Any], dict[str, Any], list[Any]]:
    """The stored stage of `source` as the output of a stage's work: its predictions (scored again
    by the runner) and the evaluation facts of its info (batch, tokens/s), marked as shared."""
    record = store.stage(source, stage)
    assert record is not None  # found complete by shared_source, under the same store
    facts = {name: value for name, value in record.info.items() if name not in ("data_notes", "versions")}
    facts["shared_from"] = {"run_id": source, "seconds": record.seconds}
    return store.predictions(source, stage), {}, facts, []
