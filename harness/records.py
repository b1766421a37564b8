"""What the stored stage records share between the engine (harness/run/), which writes them, and the
comparisons (harness/compare/), which read them: the digest of the gold an eval stage was scored
against, the data files that changed since a stage was stored, and the names of lm-eval's stages.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

from harness.types import Example

STAGE_PREFIX = "lmeval:"


def stage_name(task: str, which: str) -> str:
    return f"{STAGE_PREFIX}{task}:{which}"


def parse_stage(stage: str) -> tuple[str, str] | None:
    """`lmeval:<task>:baseline` -> (task, "baseline"); None for any other stage."""
    if not stage.startswith(STAGE_PREFIX):
        return None
    task, _, which = stage[len(STAGE_PREFIX):].rpartition(":")
    return (task, which) if task and which in ("baseline", "finetuned") else None


def gold_digest(examples: Sequence[Example]) -> str:
    """sha256 of every eval example's id and what is right for it (label, references, answer
    offsets), in order: two stages with equal digests were scored against the same gold."""
    rows = [[e.id, e.label, list(e.references), list(e.answer_starts)] for e in examples]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def changed_files(stored: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """The data files whose contents differ from the stored hashes (file path -> sha256). Contents,
    not paths, decide, so a moved but identical data folder still matches; empty hashes (a hub
    dataset without a fingerprint) and records without hashes cannot be checked."""
    before, now = set(stored.values()) - {""}, set(current.values()) - {""}
    if not before or not now or before == now:
        return []
    changed = [path for path, digest in current.items() if digest and digest not in before]
    gone = [path for path, digest in stored.items() if digest and digest not in now and path not in current]
    return sorted(changed) + sorted(gone)
